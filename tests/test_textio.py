"""Line reading (validation, line ends) and atomic output of nmt.textio."""

from __future__ import annotations

import gzip

import pytest

from nmt.errors import InputError
from nmt.textio import atomic_output, read_binary, read_lines


def test_read_lines_keeps_line_ends_and_drops_bom(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes("\ufeffone\r\ntwo\n\nlast".encode())
    assert list(read_lines(str(path))) == [("one", "\r\n"), ("two", "\n"), ("", "\n"), ("last", "")]


@pytest.mark.parametrize(
    ("content", "line", "what"),
    [(b"ok\nbad \xff\n", 2, "invalid UTF-8"), (b"ok\nok\nnul\x00\n", 3, "NUL")],
)
def test_bad_bytes_name_the_line(tmp_path, content, line, what):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(InputError) as e:
        list(read_lines(str(path)))
    assert e.value.line == line and what in e.value.message and str(path) in str(e.value)


def test_replace_substitutes_invalid_utf8(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"bad \xff\n")
    assert list(read_lines(str(path), errors="replace")) == [("bad \ufffd", "\n")]


def test_truncated_gzip_is_an_error(tmp_path):
    whole = gzip.compress(("line\n" * 5000).encode())
    path = tmp_path / "cut.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError) as e:
        list(read_lines(str(path)))
    assert "gzip" in e.value.message
    with pytest.raises(InputError, match="gzip"):  # the whole-file reader says the same
        read_binary(str(path))
    (tmp_path / "whole.gz").write_bytes(whole)
    assert read_binary(str(tmp_path / "whole.gz")) == b"line\n" * 5000
    with pytest.raises(InputError, match="cannot open"):
        read_binary(str(tmp_path / "missing.txt"))


@pytest.mark.parametrize("name", ["out.txt", "out.txt.gz"])
def test_atomic_output_appears_only_when_complete(tmp_path, name):
    target = tmp_path / name
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(str(target)) as out:
            out.write("partial\n")
            raise KeyboardInterrupt
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_output(str(target)) as out:
        out.write("complete\n")
    data = target.read_bytes()
    assert (gzip.decompress(data) if name.endswith(".gz") else data) == b"complete\n"
    assert list(tmp_path.iterdir()) == [target]


def test_a_file_of_nothing_but_a_bom_has_no_lines(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf")
    assert list(read_lines(str(path))) == []
    path.write_bytes(b"\xef\xbb\xbf\n")
    assert list(read_lines(str(path))) == [("", "\n")]
