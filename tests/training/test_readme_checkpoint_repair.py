"""README, "Kill and resume" -> Checkpoints: "Before autoresume loads anything, the latest checkpoint is checked: a
partial file from a kill during a save, or a truncated or corrupted one, is moved aside to `*.corrupt` with a
warning naming it, and the run resumes from the previous good checkpoint."

In-process, on real checkpoint files: torch.save zips (the format Composer writes) named and linked as Composer
names and links them, then cut short or damaged. (tests/training/test_resume.py covers a truncated checkpoint of a
real run end to end; these cover the renames, a corrupted-not-truncated file, sharded folders and the error when
nothing is readable.)
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from core.errors import CheckpointError
from training.resume.checkpoints import LATEST, readable, repair_latest


def _save(folder: Path, batch: int) -> Path:
    path = folder / f"ep0-ba{batch}-rank0.pt"
    torch.save({"state": {"model": {"w": torch.full((50_000,), float(batch))}, "timestamp": batch}}, path)
    return path


def _link(folder: Path, target: Path) -> None:
    latest = folder / LATEST
    if latest.is_symlink():
        latest.unlink()
    os.symlink(target.name, latest)


@pytest.fixture
def folder(tmp_path) -> Path:
    """ep0-ba10, ep0-ba20, ep0-ba30 (all good), latest -> ep0-ba30."""
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for batch in (10, 20, 30):
        _save(ckpts, batch)
    _link(ckpts, ckpts / "ep0-ba30-rank0.pt")
    return ckpts


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _corrupt(path: Path) -> None:
    """Flip bytes in the middle of the tensor data: the zip stays a zip, one entry fails its CRC."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


def _latest_batch(folder: Path) -> int:
    return torch.load(folder / LATEST, weights_only=False)["state"]["timestamp"]


def test_good_checkpoints_are_left_alone(folder):
    assert repair_latest(str(folder)) == []
    assert (folder / LATEST).resolve().name == "ep0-ba30-rank0.pt"
    assert not list(folder.glob("*.corrupt"))


def test_partial_file_from_a_kill_during_save_is_moved_aside(folder):
    """Composer writes ep0-ba30 in place, then repoints latest: killed in between, latest still names ba20."""
    partial = folder / "ep0-ba30-rank0.pt"
    _truncate(partial)
    _link(folder, folder / "ep0-ba20-rank0.pt")
    notes = repair_latest(str(folder))
    assert len(notes) == 1 and str(partial) in notes[0] and "moved it to ep0-ba30-rank0.pt.corrupt" in notes[0]
    assert not partial.exists() and (folder / "ep0-ba30-rank0.pt.corrupt").is_file()
    assert (folder / LATEST).resolve().name == "ep0-ba20-rank0.pt" and _latest_batch(folder) == 20


@pytest.mark.parametrize("damage", [_truncate, _corrupt], ids=["truncated", "corrupted"])
def test_damaged_latest_falls_back_to_the_previous_good_checkpoint(folder, damage):
    bad = folder / "ep0-ba30-rank0.pt"
    damage(bad)
    assert readable(bad) is not None
    notes = repair_latest(str(folder))
    assert any(f"checkpoint {bad} is unreadable" in n and "ep0-ba30-rank0.pt.corrupt" in n for n in notes), notes
    assert any("resuming from" in n and "ep0-ba20-rank0.pt" in n for n in notes), notes
    assert (folder / LATEST).is_symlink() and (folder / LATEST).resolve().name == "ep0-ba20-rank0.pt"
    assert _latest_batch(folder) == 20
    assert sorted(p.name for p in folder.iterdir()) == [
        "ep0-ba10-rank0.pt", "ep0-ba20-rank0.pt", "ep0-ba30-rank0.pt.corrupt", LATEST]
    # the step can be saved again under its own name; a later repair leaves the .corrupt file be
    _save(folder, 30)
    _link(folder, folder / "ep0-ba30-rank0.pt")
    assert repair_latest(str(folder)) == []


def test_missing_latest_link_is_pointed_at_the_newest_good_checkpoint(folder):
    (folder / LATEST).unlink()  # a kill between Composer's remove and re-create of the link
    _truncate(folder / "ep0-ba30-rank0.pt")
    notes = repair_latest(str(folder))
    assert notes[-1].startswith("resuming from") and "latest pointed at nothing" in notes[-1]
    assert _latest_batch(folder) == 20


def test_several_bad_checkpoints_are_all_moved_until_a_good_one(folder):
    _truncate(folder / "ep0-ba30-rank0.pt")
    _corrupt(folder / "ep0-ba20-rank0.pt")
    notes = repair_latest(str(folder))
    assert sum("unreadable" in n for n in notes) == 2
    assert sorted(p.name for p in folder.glob("*.corrupt")) == ["ep0-ba20-rank0.pt.corrupt",
                                                                "ep0-ba30-rank0.pt.corrupt"]
    assert _latest_batch(folder) == 10


def test_no_readable_checkpoint_is_an_error_naming_the_folder(folder):
    for batch in (10, 20, 30):
        _truncate(folder / f"ep0-ba{batch}-rank0.pt")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint in .*checkpoints \(all moved to \*\.corrupt\); "
                                              r"delete the folder to start the run over"):
        repair_latest(str(folder))
    assert sorted(p.name for p in folder.glob("ep*")) == [f"ep0-ba{b}-rank0.pt.corrupt" for b in (10, 20, 30)]


def test_sharded_folder_without_metadata_is_moved_aside(tmp_path):
    """FSDP sharded checkpoints are folders; .metadata is written last, so a folder without it is a cut save."""
    folder = tmp_path / "checkpoints"
    for batch in (10, 20):
        shard = folder / f"ep0-ba{batch}"
        shard.mkdir(parents=True)
        (shard / "__0_0.distcp").write_bytes(b"x" * 100)
        (shard / ".metadata").write_bytes(b"m")
    (folder / "ep0-ba20" / ".metadata").unlink()
    (folder / "ep0-ba20.corrupt").mkdir()  # left by an earlier repair: replaced
    _link(folder, folder / "ep0-ba20")
    notes = repair_latest(str(folder))
    assert any("ep0-ba20 is unreadable: a sharded checkpoint without .metadata" in n for n in notes), notes
    assert (folder / "ep0-ba20.corrupt" / "__0_0.distcp").is_file()
    assert (folder / LATEST).resolve().name == "ep0-ba10"


def test_autoresume_prints_a_warning_naming_the_moved_checkpoint(folder, capsys):
    """What a user sees: prepare_resume (run at start-up, before anything loads) prints each repair as a warning
    and then resumes from the good checkpoint."""
    from tests.helpers import REPO
    from training.config import load_config
    from training.resume import prepare_resume

    bad = folder / "ep0-ba30-rank0.pt"
    _corrupt(bad)
    cfg = load_config(str(REPO / "yamls" / "tiny.yaml"),
                      ["data.path=unused", f"runs_root={folder.parent}", "run_name=r", f"save_folder={folder}"])
    assert prepare_resume(cfg, autoresume=True) is True
    out = capsys.readouterr().out
    assert f"warning: checkpoint {bad} is unreadable" in out and "moved it to ep0-ba30-rank0.pt.corrupt" in out
    assert (folder / LATEST).resolve().name == "ep0-ba20-rank0.pt"
    for batch in (10, 20):
        _truncate(folder / f"ep0-ba{batch}-rank0.pt")
    with pytest.raises(CheckpointError, match="no readable checkpoint in"):
        prepare_resume(cfg, autoresume=True)
