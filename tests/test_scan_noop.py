"""A scan that finds nothing new: same output as before, from the store's caches, without
importing polars, pandas, pyarrow, the mail parser or the proposer (most of its time would
be those imports)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from triage.config import load_config
from triage.review import ReviewSession
from triage.rulebook import load_rulebook
from triage.scan import scan
from triage.store import Store
from triage.weekly import week_summary
from triage.weekly_rules import feedback_json, rule_feedback

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
HEAVY = ("polars", "pandas", "pyarrow", "numpy", "scipy", "mailparser")

# Runs the CLI as `python -m triage.cli` does and writes the modules it imported to argv[1].
_RUN = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "triage"
runpy.run_module("triage.cli", run_name="__main__", alter_sys=True)
"""


def _copy_samples(dst: Path) -> Path:
    shutil.copytree(SAMPLES, dst, ignore=shutil.ignore_patterns(".state", "*.py"))
    cfg = dst / "triage.toml"
    text = cfg.read_text().replace('state_dir = ".state"', 'state_dir = "state"')
    cfg.write_text(text.replace('postfix_dir = ".state/maps"', 'postfix_dir = "state/maps"'))
    return cfg


def _cli(tmp: Path, *args: str) -> tuple[str, set[str]]:
    """stdout of `triage ARGS` in a fresh interpreter, and the top-level packages it
    imported."""
    mods = tmp / "modules.json"
    proc = subprocess.run([sys.executable, "-c", _RUN, str(mods), *args],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, {m.split(".")[0] for m in json.loads(mods.read_text())}


def _rescan_json(tmp: Path, cfg: Path) -> tuple[dict[str, Any], set[str]]:
    out, mods = _cli(tmp, "scan", "--config", str(cfg), "--no-review", "--json")
    data = json.loads(out)
    del data["scan"]["seconds"]
    return data, mods


def test_rescan_with_nothing_new_imports_no_dataframe_library(tmp_path: Path) -> None:
    cfg = _copy_samples(tmp_path / "s")
    config = load_config(cfg)
    # Proposals dated before the samples' weeks, approved as trial rules: the log's lines
    # that carry their ids count as hits, so the feedback has something to read.
    scan(config, now=datetime(2025, 9, 1, tzinfo=UTC))
    assert ReviewSession(load_rulebook(config.rulebook_dir()), "test").approve_all()

    # The rules in the maps changed: their feedback is read from the history once ...
    first, mods = _rescan_json(tmp_path, cfg)
    assert "polars" in mods
    assert sum(f["hits"] for f in first["feedback"]) > 0
    # ... then a rescan needs neither the history nor the libraries that read it.
    again, mods = _rescan_json(tmp_path, cfg)
    assert not mods & set(HEAVY), sorted(mods & set(HEAVY))
    assert again == first
    assert again["scan"]["committed"] is False and again["scan"]["lines"] == 0
    text, mods = _cli(tmp_path, "scan", "--config", str(cfg), "--no-review")
    assert not mods & set(HEAVY), sorted(mods & set(HEAVY))
    assert text.startswith("Nothing new since the last scan")
    n = len(first["feedback"])
    assert "Week 2025-W41" in text and f"Rules in the maps: {n} ({n} on trial" in text

    # Without the caches the same figures come from the history.
    shutil.rmtree(config.state_dir / "cache")
    store = Store(config.state_dir)
    assert week_summary(store) == first["summary"]
    assert feedback_json(rule_feedback(store, load_rulebook(config.rulebook_dir()).emitted(),
                                       config)) == first["feedback"]
    shutil.rmtree(config.state_dir / "cache")
    rebuilt, mods = _rescan_json(tmp_path, cfg)
    assert rebuilt == first
    assert "polars" in mods


def test_cache_follows_the_history(tmp_path: Path) -> None:
    """A cache is for one committed generation: a scan that reads new lines makes it stale."""
    cfg = _copy_samples(tmp_path / "s")
    config = load_config(cfg)
    scan(config)
    store = Store(config.state_dir)
    key = store.commit_key()
    store.write_cache("probe", key, {"n": 1})
    assert store.read_cache("probe") == {"n": 1}
    log = Path(config.resolve("mail.log"))
    line = log.read_bytes().splitlines(keepends=True)[-1]
    with log.open("ab") as f:
        f.write(line)
    assert scan(config).committed
    assert store.commit_key() != key and store.read_cache("probe") is None
    store.write_cache("probe", key, {"n": 2})  # computed from the old history: not kept
    assert store.read_cache("probe") is None


def test_seen_keys_of_an_older_state_dir_are_still_read(tmp_path: Path) -> None:
    """Before the seen keys were JSON they were a Parquet file; such a state directory
    rescans as nothing new and its next commit writes JSON."""
    cfg = _copy_samples(tmp_path / "s")
    config = load_config(cfg)
    scan(config)
    store = Store(config.state_dir)
    state = store.state()
    assert state.seen_file is not None and state.seen_file.endswith(".json.gz")
    seen = store.seen()
    assert sum(map(len, seen.values())) > 0
    old = config.state_dir / state.seen_file.replace(".json.gz", ".parquet")
    pl.DataFrame([(f, k) for f, keys in seen.items() for k in keys],
                 schema={"folder": pl.String, "key": pl.String}, orient="row").write_parquet(old)
    data = json.loads((config.state_dir / "state.json").read_text())
    data["seen_file"] = str(old.relative_to(config.state_dir))
    (config.state_dir / "state.json").write_text(json.dumps(data))
    (config.state_dir / state.seen_file).unlink()
    assert store.seen() == seen
    assert scan(config).nothing_new
    log = Path(config.resolve("mail.log"))
    with log.open("ab") as f:
        f.write(log.read_bytes().splitlines(keepends=True)[-1])
    assert scan(config).committed
    new = store.state().seen_file
    assert new is not None and new.endswith(".json.gz") and not old.exists()
    assert json.loads(gzip.decompress((config.state_dir / new).read_bytes())) == {
        folder: sorted(keys) for folder, keys in sorted(seen.items())}
