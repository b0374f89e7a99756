"""A build that is damaged, interrupted or fails half-way: vanished outputs are rebuilt, Ctrl-C says how to
resume, progress shows when output is not a terminal, and what finished is printed when a later stage fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
from conftest import LONGMIX, REPO, write_jsonl, write_recipe
from helpers_cli import cli, one_line_error

from longmix.data.tokenize.encode import train_bpe

sys.path.insert(0, str(REPO / "tests" / "tools"))
from compare_builds import differences  # noqa: E402


def _recipe(tmp_path: Path, demo_corpus: Path, name: str, stages: dict | None = None, **extra) -> Path:
    sources = [{"name": "docs", "paths": [str(demo_corpus / "docs" / "part-0000[0-2].jsonl")]},
               {"name": "legal", "paths": [str(demo_corpus / "legal" / "*.jsonl")]}]
    path = write_recipe(tmp_path / f"{name}.yaml", tmp_path / name, sources, stages or {}, workers=2)
    if extra:
        import yaml

        data = yaml.safe_load(path.read_text())
        data.update(extra)
        path.write_text(yaml.safe_dump(data))
    return path


def test_vanished_outputs_are_rebuilt_to_the_same_bytes(tmp_path, demo_corpus):
    texts = [t for t in (demo_corpus / "legal").glob("*.jsonl")]
    tok = tmp_path / "tok.json"
    train_bpe([p.read_text()[:200_000] for p in texts], 512, tok)
    recipe = _recipe(tmp_path, demo_corpus, "out", tokenizer={"path": str(tok)}, seq_len=256)
    assert cli("build", str(recipe)).returncode == 0
    assert cli("build", str(recipe), "-o", str(tmp_path / "reference")).returncode == 0
    out = tmp_path / "out"
    gone = [next((out / "ingest" / "shards" / "docs").glob("*.parquet")), next((out / "tokenize").rglob("*.arrow")),
            next((out / "pack" / "shards").glob("*.arrow"))]
    for p in gone:
        p.unlink()
    (out / "near_dedup" / "_tasks" / "apply-00000.json").unlink()  # a lost marker alone: that task reruns
    again = cli("build", str(recipe))
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("missing or changed since the stage finished") == 3
    assert cli("verify", str(out / "manifest.json")).returncode == 0
    assert all(p.is_file() for p in gone)
    assert differences(tmp_path / "reference", out) == []


def test_progress_lines_and_results_on_stdout_when_not_a_terminal(tmp_path, demo_corpus):
    proc = cli("build", _recipe(tmp_path, demo_corpus, "out"), "--until", "exact_dedup",
               env={"LONGMIX_PROGRESS_SECONDS": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "ingest: 4 tasks" in proc.stderr and "ingest: 4/4 tasks done in" in proc.stderr
    assert "exact dedup: 4/4 tasks done in" in proc.stderr
    assert f"outputs in {tmp_path / 'out'}" in proc.stdout  # one unwrapped line a script can read


def test_reports_of_finished_stages_print_when_a_later_stage_fails(tmp_path, demo_corpus):
    recipe = _recipe(tmp_path, demo_corpus, "out", {"filter": {"enabled": True, "heuristics": {"min_chars": 10**9}}})
    proc = cli("build", recipe)
    one_line_error(proc, "no documents left after stage filter (min_chars", alone=False)  # after progress lines
    for stage in ("ingest", "exact_dedup", "near_dedup", "filter"):
        assert stage in proc.stdout  # the stage table of what did finish


def test_ctrl_c_says_how_to_resume(tmp_path, demo_corpus):
    recipe = _recipe(tmp_path, demo_corpus, "out")
    (tmp_path / "out.yaml").write_text((tmp_path / "out.yaml").read_text().replace(
        "part-0000[0-2].jsonl", "*.jsonl"))
    proc = subprocess.Popen([*LONGMIX, "build", str(recipe)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (tmp_path / "out" / "ingest" / "stage.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; finished tasks are kept: rerun the same command to resume" in err
    assert "Traceback" not in err


def test_dedup_of_a_folder_of_jsonl_reads_its_records(tmp_path):
    folder = tmp_path / "in"
    write_jsonl(folder / "a.jsonl", [{"id": str(i), "text": f"document number {i} " * 20} for i in range(5)])
    write_jsonl(folder / "sub" / "b.jsonl", [{"id": "x", "text": "another document entirely " * 20}])
    proc = cli("dedup", str(folder), "-o", str(tmp_path / "out"), "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    kept = pl.read_parquet(tmp_path / "out" / "near_dedup" / "shards" / "**" / "*.parquet")
    assert sorted(kept["id"].to_list()) == ["0", "1", "2", "3", "4", "x"]  # records, not one doc per file


def test_sigterm_ends_the_build_and_its_workers(tmp_path, demo_corpus):
    """SIGTERM (Slurm, Kubernetes, `timeout`) is Ctrl-C: one message, exit 130, and no worker outlives the build."""
    recipe = _recipe(tmp_path, demo_corpus, "out")
    (tmp_path / "out.yaml").write_text((tmp_path / "out.yaml").read_text().replace(
        "part-0000[0-2].jsonl", "*.jsonl"))
    proc = subprocess.Popen([*LONGMIX, "build", str(recipe)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        while not (tmp_path / "out" / "ingest" / "stage.json").exists() and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate()
        assert proc.returncode == 130, err
        assert "interrupted; finished tasks are kept: rerun the same command to resume" in err
        assert "Traceback" not in err
        import psutil

        def running(p: psutil.Process) -> bool:  # a zombie waiting for init to reap it runs nothing
            try:
                return os.getpgid(p.pid) == proc.pid and p.status() != psutil.STATUS_ZOMBIE
            except (ProcessLookupError, psutil.NoSuchProcess):
                return False

        # the pool's workers are gone at once; multiprocessing's resource tracker ends itself when it reads the
        # build's exit (moments later), so the group gets a grace far beyond that before anything counts as left
        deadline = time.monotonic() + 30
        while (left := [p for p in psutil.process_iter() if running(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"processes outlived the build: {[(p.pid, p.cmdline()) for p in left]}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_second_build_on_one_folder_is_refused(tmp_path, demo_corpus, caplog):
    """Two builds writing one output folder would mix their files; the second is refused in one line naming
    the first, and a lock whose holder was killed is taken over, saying so."""
    import json

    from longmix.core.folder_lock import LOCK_NAME, folder_lock

    recipe = _recipe(tmp_path, demo_corpus, "out")
    with folder_lock(tmp_path / "out", "build"):
        one_line_error(cli("build", recipe), f"in use by another longmix build (pid {os.getpid()}")
    (tmp_path / "out" / LOCK_NAME).write_text(json.dumps(  # what a killed build leaves: its record, no flock
        {"pid": 999999, "what": "build", "command": "longmix build out.yaml", "started": "2026-12-01 10:00:00"}))
    with caplog.at_level("WARNING"):
        res = cli("build", recipe, "--until", "ingest")
    assert res.returncode == 0, res.stderr
    assert "taking over from a longmix build (pid 999999" in caplog.text
    assert (tmp_path / "out" / LOCK_NAME).read_text() == ""  # released at the end


def test_write_faults_are_one_line(tmp_path, demo_corpus):
    """An output path that is a file (and, by the same handler, a full disk or a read-only folder) is one
    line naming the path, exit 2, no traceback."""
    import errno

    from longmix.cli.app import storage_fault

    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")
    proc = cli("build", str(_recipe(tmp_path, demo_corpus, "out")))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and str(blocker) in proc.stderr
    full = storage_fault(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.parquet")))
    assert full == (f"no space left on the device at {tmp_path / 'x.parquet'}; finished tasks are kept: fix it and "
                    "rerun the same command to resume")
    # a read-only folder cannot be made here (the tests run as root, which writes through chmod 555); the same
    # handler names it, and the kernel's EROFS/EACCES is what a read-only mount or folder raises
    for code, what in [(errno.EROFS, "the file system is read-only"), (errno.EACCES, "permission denied")]:
        assert storage_fault(OSError(code, "x", "/ro/out")) == (f"{what} at /ro/out: choose another output folder "
                                                                "or fix it")
    assert storage_fault(OSError(errno.EIO, "I/O error")) is None  # anything else stays a crash with its trace


def test_a_full_disk_mid_build_resumes_to_the_same_bytes(tmp_path, demo_corpus, monkeypatch):
    """The disk fills while the build writes its 40th file: the build stops with the one line that says so,
    and the rerun after space is freed resumes to the bytes of a build that never failed."""
    import errno
    import tempfile

    from longmix.cli.app import storage_fault
    from longmix.core import atomic

    tok = tmp_path / "tok.json"
    train_bpe([p.read_text()[:200_000] for p in (demo_corpus / "legal").glob("*.jsonl")], 512, tok)
    recipe = _recipe(tmp_path, demo_corpus, "out", tokenizer={"path": str(tok)}, seq_len=256,
                     executor={"kind": "local", "workers": 1})  # one worker: the build runs in this process
    writes = []

    class FillingDisk:
        @staticmethod
        def mkstemp(**kwargs):
            writes.append(kwargs["dir"])
            if len(writes) >= 40:
                raise OSError(errno.ENOSPC, "No space left on device", kwargs["dir"])
            return tempfile.mkstemp(**kwargs)

    monkeypatch.setattr(atomic, "tempfile", FillingDisk)
    failed = cli("build", recipe)
    assert isinstance(failed.exception, OSError), failed.stderr
    assert "near_dedup" in str(writes[-1])  # ingest and exact dedup finished; the rest resumes
    assert storage_fault(failed.exception).startswith(f"no space left on the device at {writes[-1]}; finished tasks")
    monkeypatch.undo()
    assert cli("build", recipe).returncode == 0
    clean = cli("build", recipe, "-o", tmp_path / "reference")
    assert clean.returncode == 0, clean.stderr
    assert differences(tmp_path / "reference", tmp_path / "out") == []
