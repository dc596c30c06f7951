from kvant.runtime.textstream import TextStream


def test_cyrillic_letter_split_across_tokens_is_held_until_complete():
    data = "Книга".encode()
    stream = TextStream()
    pieces = [stream.feed(data[i:i + 1]) for i in range(len(data))]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + stream.flush() == "Книга"
    assert pieces[0] == ""  # the first byte alone is half a letter


def test_stop_string_cuts_and_is_never_printed():
    stream = TextStream(stop=["<end>"])
    out = [stream.feed(b) for b in (b"Hello <", b"en", b"d> more")]
    assert "".join(out) == "Hello "
    assert stream.stopped
    assert stream.feed(b"x") == ""


def test_partial_stop_prefix_released_when_it_turns_out_not_to_stop():
    stream = TextStream(stop=["</s>"])
    assert stream.feed(b"a</") == "a"
    assert stream.feed(b"b") == "</b"
    assert stream.flush() == ""


def test_invalid_bytes_become_replacement_not_crash():
    stream = TextStream()
    assert stream.feed(b"\xff") + stream.flush() == "\ufffd"
