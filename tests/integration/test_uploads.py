"""agent/uploads.py: uploads kept by base name, and zips from strangers unpacked safely (real zip files)."""
from __future__ import annotations

import io
import stat
import zipfile

import pytest

from agent import uploads
from conftest import DEMO_CORPUS

SLIDE = "slide_3_1024.jpg"


def write_zip(path, members):
    """members: (name, bytes) or a ready ZipInfo with its bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def reasons(result):
    return {s.path.split(" → ", 1)[-1]: s.reason for s in result.skipped}


def test_upload_names_are_reduced_to_base_names(tmp_path):
    saved = uploads.save_uploads([("../../etc/passwd", b"x"), ("C:\\Users\\me\\a.pdf", b"%PDF"), (".hidden.png", b"p"), ("", b"e")], tmp_path / "up")
    assert [p.name for p in saved] == ["passwd", "a.pdf", "_.hidden.png", "upload"]
    assert all(p.parent == tmp_path / "up" for p in saved)
    assert files_under(tmp_path) == ["up/_.hidden.png", "up/a.pdf", "up/passwd", "up/upload"]


def test_a_zip_of_documents_unpacks_with_its_folders(tmp_path):
    jpeg = (DEMO_CORPUS / SLIDE).read_bytes()
    archive = write_zip(tmp_path / "docs.zip", [("deck/slides/one.jpg", jpeg), ("two.JPG", jpeg), ("report.pdf", b"%PDF-1.4"),
                                                ("notes.txt", b"words"), ("__MACOSX/._one.jpg", b"meta"), ("deck/", b"")])
    result = uploads.unpack_zip(archive, tmp_path / "out")
    assert files_under(tmp_path / "out") == ["deck/slides/one.jpg", "report.pdf", "two.JPG"]
    assert (tmp_path / "out" / "two.JPG").read_bytes() == jpeg
    assert reasons(result) == {"notes.txt": reasons(result)["notes.txt"]} and "unsupported file type '.txt'" in reasons(result)["notes.txt"]


@pytest.mark.parametrize("name,why", [
    ("../../escape.jpg", "climbs out"),
    ("deck/../../escape.jpg", "climbs out"),
    ("..\\..\\escape.jpg", "climbs out"),
    ("/etc/cron.d/evil.jpg", "absolute path"),
    ("C:/Windows/evil.jpg", "absolute path"),
    ("deck/.hidden/x.jpg", "hidden file"),
])
def test_hostile_names_are_refused_and_nothing_is_written_outside(tmp_path, name, why):
    archive = write_zip(tmp_path / "evil.zip", [(name, b"\xff\xd8 not really a jpeg"), ("ok.png", b"png")])
    dest = tmp_path / "uploads" / "evil (zip)"
    result = uploads.unpack_zip(archive, dest)
    assert files_under(tmp_path / "uploads") == ["evil (zip)/ok.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.zip", "uploads"]  # nothing escaped
    assert why in reasons(result)[name]


def test_a_symbolic_link_is_refused(tmp_path):
    link = zipfile.ZipInfo("passwd.jpg")
    link.create_system = 3  # Unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "links.zip", "w") as zf:
        zf.writestr(link, "/etc/passwd")  # a link's data is its target
        zf.writestr("real.jpg", b"jpeg")
    result = uploads.unpack_zip(tmp_path / "links.zip", tmp_path / "out")
    assert files_under(tmp_path / "out") == ["real.jpg"]
    assert not (tmp_path / "out" / "passwd.jpg").is_symlink()
    assert "symbolic link" in reasons(result)["passwd.jpg"]


def test_a_zip_bomb_stops_at_the_size_budget(tmp_path):
    zeros = b"\0" * (8 * 1024 * 1024)  # 8 MiB of zeros deflate to a few KB
    archive = write_zip(tmp_path / "bomb.zip", [(f"page{i}.png", zeros) for i in range(5)])
    assert archive.stat().st_size < 200_000
    result = uploads.unpack_zip(archive, tmp_path / "out", max_bytes=20 * 1024 * 1024)
    assert len(result.files) == 2  # 16 MiB written; the third would pass 20 MiB
    assert sum(p.stat().st_size for p in result.files) == 16 * 1024 * 1024
    assert len(result.skipped) == 3 and all("past" in s.reason for s in result.skipped)


def test_a_member_that_is_bigger_than_it_says_is_not_written(tmp_path):
    """A lying size header: the copy counts bytes and stops at the declared size (the CRC then fails)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("big.png", b"A" * 5000)
    data = bytearray(buffer.getvalue())
    # shrink the declared uncompressed size in the local header and the central directory to 10 bytes
    for offset in (data.find(b"PK\x03\x04") + 22, data.find(b"PK\x01\x02") + 24):
        data[offset:offset + 4] = (10).to_bytes(4, "little")
    (tmp_path / "liar.zip").write_bytes(bytes(data))
    result = uploads.unpack_zip(tmp_path / "liar.zip", tmp_path / "out")
    assert result.files == [] and files_under(tmp_path / "out") == []
    assert len(result.skipped) == 1


def test_too_many_members_are_cut_and_said(tmp_path):
    archive = write_zip(tmp_path / "many.zip", [(f"p{i}.png", b"x") for i in range(30)])
    result = uploads.unpack_zip(archive, tmp_path / "out", max_members=10)
    assert len(result.files) == 10 and "holds 30 entries; only the first 10" in result.skipped[0].reason


def test_a_file_that_is_not_a_zip_is_one_clear_skip(tmp_path):
    (tmp_path / "fake.zip").write_bytes(b"this is not a zip file")
    result = uploads.unpack_zip(tmp_path / "fake.zip", tmp_path / "out")
    assert result.files == [] and [s.reason for s in result.skipped] == ["not a readable zip file (File is not a zip file)"]


def test_an_encrypted_member_is_skipped_with_a_reason(tmp_path):
    archive = write_zip(tmp_path / "locked.zip", [("a.png", b"png")])
    data = bytearray(archive.read_bytes())
    for offset in (data.find(b"PK\x03\x04") + 6, data.find(b"PK\x01\x02") + 8):  # set the 'encrypted' flag bit
        data[offset] |= 0x1
    archive.write_bytes(bytes(data))
    result = uploads.unpack_zip(archive, tmp_path / "out")
    assert result.files == [] and "encrypted" in reasons(result)["a.png"]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from search_engine.index import DocumentIndex

    return DocumentIndex.open(tmp_path_factory.mktemp("zip-index") / "idx")


def test_ingest_with_zips_unpacks_removes_the_uploaded_copy_and_merges_the_skips(tmp_path, index):
    up = tmp_path / "uploads" / "idx"
    up.mkdir(parents=True)
    archive = write_zip(up / "deck.zip", [(f"deck/{SLIDE}", (DEMO_CORPUS / SLIDE).read_bytes()), ("readme.md", b"words"), ("broken.pdf", b"%PDF-1.4 not really")])
    report = uploads.ingest_with_zips(index, [archive], up, remove_zips=True)
    assert report.added == ["slide_3_1024"]
    assert not archive.exists() and (up / "deck (zip)" / "deck" / SLIDE).is_file()
    why = {s.path.rsplit("/", 1)[-1]: s.reason for s in report.skipped}
    assert list(why) == ["deck.zip → readme.md", "broken.pdf"]  # the zip's own skips first, then the ingest's
    assert "unsupported file type '.md'" in why["deck.zip → readme.md"]
    # the same zip again: its folder is replaced, the page is unchanged
    archive = write_zip(up / "deck.zip", [(f"deck/{SLIDE}", (DEMO_CORPUS / SLIDE).read_bytes())])
    again = uploads.ingest_with_zips(index, [archive], up, remove_zips=True)
    assert again.added == [] and again.unchanged_files == 1 and again.skipped == []
    assert files_under(up) == [f"deck (zip)/deck/{SLIDE}"]


def test_a_zip_on_the_server_is_unpacked_into_uploads_and_left_in_place(tmp_path, index):
    archive = write_zip(tmp_path / "mine.zip", [("notes.txt", b"x")])
    report = uploads.ingest_with_zips(index, [archive], tmp_path / "uploads")
    assert archive.is_file()
    assert [(s.path, s.reason.split(";")[0]) for s in report.skipped] == [(f"{archive} → notes.txt", "unsupported file type '.txt'")]
    assert report.added == [] and files_under(tmp_path / "uploads") == []
