"""Drop folders, local and on a real OpenSSH sshd: listing, settling, streaming, moving."""

import os
from pathlib import Path

import pytest
from conftest import sftp_connection_to

from toolkit import pickup

pytestmark = pytest.mark.inbound


def test_lists_matching_files_directly_in_the_folder(drop):
    """Only files matching the glob, directly in the folder, hidden ones left out."""
    folder, path = drop
    (path / "b.csv").write_text("x\n1\n")
    (path / "a.csv").write_text("x\n")
    (path / "notes.txt").write_text("")
    (path / ".a.csv.part-1a2b").write_text("")
    (path / "processed").mkdir()
    (path / "processed" / "c.csv").write_text("")
    listed = folder.list_files("*.csv")
    assert [(f.name, f.size) for f in listed] == [("a.csv", 2), ("b.csv", 4)]
    assert listed[0].modified.tzinfo is not None
    assert abs(listed[0].modified.timestamp() - (path / "a.csv").stat().st_mtime) < 1


def test_streams_a_file_whole(drop):
    """A file larger than the read-ahead window comes back byte for byte."""
    folder, path = drop
    payload = os.urandom(pickup.SFTP_READ_AHEAD_BYTES * 2 + 12345)
    (path / "big.bin").write_bytes(payload)
    with folder.open_file("big.bin") as reader:
        received = b"".join(iter(lambda: reader.read(100_000), b""))
    assert received == payload


def test_move_never_overwrites(drop):
    """A move creates the folders; onto an existing name it raises, nothing lost."""
    folder, path = drop
    (path / "x.csv").write_text("new")
    (path / "processed" / "d").mkdir(parents=True)
    (path / "processed" / "d" / "x.csv").write_text("old")
    with pytest.raises(FileExistsError):
        folder.move("x.csv", "processed/d/x.csv")
    assert (path / "x.csv").read_text() == "new"
    assert pickup.move_without_overwrite(folder, "x.csv", "processed/d") == (
        "processed/d/x.2.csv"
    )
    assert (path / "processed" / "d" / "x.csv").read_text() == "old"
    assert (path / "processed" / "d" / "x.2.csv").read_text() == "new"
    assert folder.exists("processed/d/x.2.csv") and not folder.exists("x.csv")
    folder.move("processed/d/x.2.csv", "failed/y/x.csv")
    folder.remove("failed/y/x.csv")
    assert not (path / "failed" / "y" / "x.csv").exists()


def test_settle_leaves_a_growing_file(drop, caplog):
    """A file that grows across the interval is left, with a line saying so."""
    folder, path = drop
    (path / "done.csv").write_text("a\n1\n")
    growing = path / "growing.csv"
    growing.write_text("a\n")

    def partner_writes(_seconds):
        with growing.open("a") as handle:
            handle.write("2\n")

    with caplog.at_level("INFO"):
        settled = pickup.settle(folder, "*.csv", 5, sleep=partner_writes)
    assert [f.name for f in settled.taken] == ["done.csv"]
    assert [f.name for f, _ in settled.left] == ["growing.csv"]
    assert "still growing" in caplog.text


def test_settle_by_marker(drop):
    """With markers, a file is taken once its marker is there, the marker never."""
    folder, path = drop
    for name in ("a.csv", "a.csv.done", "b.csv"):
        (path / name).write_text("a\n")
    settled = pickup.settle(folder, "*.csv*", marker_suffix=".done")
    assert [f.name for f in settled.taken] == ["a.csv"]
    assert [f.name for f, _ in settled.left] == ["b.csv"]


def test_a_marker_older_than_its_file_is_an_earlier_uploads(drop):
    """A marker left from an earlier upload of the name (a run killed between moving
    the file and its marker) does not make the next upload of that name complete."""
    folder, path = drop
    (path / "a.csv.done").write_text("")
    os.utime(path / "a.csv.done", (1_700_000_000, 1_700_000_000))
    (path / "a.csv").write_text("a\n")  # the partner's new upload, maybe half
    settled = pickup.settle(folder, "*.csv", marker_suffix=".done")
    assert not settled.taken
    [(left, reason)] = settled.left
    assert left.name == "a.csv" and "older than the file" in reason
    (path / "a.csv.done").write_text("")  # the new upload's own marker
    assert [
        f.name for f in pickup.settle(folder, "*.csv", marker_suffix=".done").taken
    ] == ["a.csv"]


def test_describe_names_the_place(sshd, tmp_path):
    """The source recorded in the ledger says where the folder is."""
    connection = sftp_connection_to(sshd, str(tmp_path))
    with pickup.SftpDropFolder(connection, "in") as remote:
        assert remote.describe() == f"sftp://127.0.0.1:{sshd.port}{tmp_path}/in"
    assert pickup.LocalDropFolder(tmp_path).describe() == str(Path(tmp_path))


@pytest.fixture
def planted(tmp_path):
    """A local drop folder, and outside it a file and a folder a partner would like a
    run to read or to write into."""
    drop = tmp_path / "drop"
    drop.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "credentials.csv"
    secret.write_text("password\nhunter2\n")
    return pickup.LocalDropFolder(drop), drop, outside, secret


def test_a_link_planted_for_a_listed_file_is_not_read(planted):
    """The file is listed, then replaced by a link to a file outside: open refuses
    it, one line, and nothing of the outside file is read. A link is never listed,
    and removing one removes the link, not its target."""
    folder, drop, _, secret = planted
    (drop / "payments.csv").write_text("id\n1\n")
    assert [f.name for f in folder.list_files("*.csv")] == ["payments.csv"]
    (drop / "payments.csv").unlink()
    (drop / "payments.csv").symlink_to(secret)
    with pytest.raises(pickup.UnsafePath) as refused:
        folder.open_file("payments.csv")
    assert str(refused.value).endswith("payments.csv is a symbolic link: not read")
    assert folder.list_files("*.csv") == []
    folder.remove("payments.csv")
    assert secret.read_text() == "password\nhunter2\n"


@pytest.mark.parametrize("planted_dir", ["processed", "failed", "processed/2024-08-01"])
def test_a_move_never_writes_through_a_planted_link(planted, planted_dir):
    """`processed`, `failed` or a day's folder made a link to a folder outside: the
    move is refused in one line, the file stays where it was, nothing lands
    outside."""
    folder, drop, outside, _ = planted
    (drop / "payments.csv").write_text("id\n1\n")
    link = drop / planted_dir
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    destination = f"{planted_dir}/payments.csv"
    with pytest.raises(pickup.UnsafePath) as refused:
        pickup.move_without_overwrite(folder, "payments.csv", planted_dir)
    print(f"\n{destination}: {refused.value}")
    assert "is not a folder of the drop folder (a symbolic link?): refused" in str(
        refused.value
    )
    assert (drop / "payments.csv").read_text() == "id\n1\n"
    assert sorted(os.listdir(outside)) == ["credentials.csv"]
