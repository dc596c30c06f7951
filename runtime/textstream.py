"""Token bytes -> text pieces that are safe to print: never half a UTF-8 character, never part of a stop string."""
import codecs


class TextStream:
    """Feed token bytes, get text pieces. A multi-byte character split across tokens is held until complete;
    text that may be the start of a stop string is held until it is known not to be one. stop: one string or
    several."""

    def __init__(self, stop=()):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in ((stop,) if isinstance(stop, str) else stop) if s]
        self._held = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        if self.stopped:
            return ""
        self._held += self._decoder.decode(data)
        return self._release(final=False)

    def flush(self) -> str:
        """The text still held. The bytes of a character the generation stopped in the middle of are dropped
        (they would print as U+FFFD)."""
        self._decoder.reset()
        return self._release(final=True)

    def _release(self, final):
        text = self._held
        cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = 0 if final else self._partial_stop_suffix(text)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def _partial_stop_suffix(self, text):
        """Length of the longest end of text that is a proper prefix of a stop string."""
        best = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best
