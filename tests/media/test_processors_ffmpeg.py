"""The one safe ffmpeg runner (media/processors/ffmpeg.py): graphs, heartbeats, and no orphans."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ffmpeg as ffmpeg_python
import pytest

from media.processors import ffmpeg
from media.processors.base import StepLog, UnsupportedMedia

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux: /proc and PR_SET_PDEATHSIG")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ffmpeg") / "clip.mkv"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-v", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4",
         "-c:v", "libx264", "-preset", "ultrafast", str(path)],
        check=True,
    )  # fmt: skip
    return path


def _state(pid: int) -> str | None:
    """The process state letter (R, S, Z …), or None when the pid is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def _children(ppid: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm == name and int(stat[stat.rindex(")") + 2 :].split()[1]) == ppid:
            found.append(int(entry.name))
    return found


def test_ffmpeg_dies_with_a_worker_killed_by_sigkill(clip, tmp_path):
    """Issue 9 row 6: kill -9 the worker mid-transcode; its ffmpeg must not run on as an orphan."""
    script = textwrap.dedent(
        f"""
        import threading, django
        django.setup()
        from pathlib import Path
        from media.processors import ffmpeg

        def work():  # like a Dramatiq worker thread
            src = ffmpeg.safe_input(Path({str(clip)!r}), demuxer="matroska", re=None, stream_loop=-1)
            ffmpeg.run_graph(src.output("-", f="null"), timeout=120)

        thread = threading.Thread(target=work)
        thread.start()
        print("started", flush=True)
        thread.join()
        """
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE)
    children: list[int] = []
    try:
        assert worker.stdout.readline().strip() == b"started"
        deadline = time.monotonic() + 10
        while not children and time.monotonic() < deadline:
            children = _children(worker.pid, "ffmpeg")
            time.sleep(0.05)
        assert len(children) == 1
        (child,) = children
        time.sleep(0.3)
        assert _state(child) in ("R", "S")

        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        deadline = time.monotonic() + 2
        while _state(child) not in (None, "Z") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _state(child) in (None, "Z")  # gone (or dead and waiting for init to reap it)
    finally:
        worker.kill()
        worker.wait()
        for pid in children:
            if _state(pid) not in (None, "Z"):
                os.kill(pid, signal.SIGKILL)


def test_progress_reaches_the_caller_at_least_every_interval(clip):
    """Issue 9 row 10: a run reports while it is alive, so the runner can heartbeat."""
    times = []
    graph = ffmpeg.safe_input(clip, demuxer="matroska", re=None).output("-", f="null")
    started = time.monotonic()
    ffmpeg.run_graph(graph, timeout=30, on_progress=lambda block: times.append(time.monotonic()))
    elapsed = time.monotonic() - started

    assert elapsed > 3.5  # -re: the 4 s clip is read in real time
    assert len(times) >= 3
    gaps = [b - a for a, b in zip([started, *times], times, strict=False)]
    assert max(gaps) < 1.6


def test_a_silent_ffmpeg_still_gives_heartbeats(clip):
    """ffmpeg printing no progress for a while (here: -stats_period 30) still yields a callback a second."""
    blocks = []
    graph = (
        ffmpeg.safe_input(clip, demuxer="matroska", re=None)
        .output("-", f="null")
        .global_args("-stats_period", "30")
    )
    started = time.monotonic()
    ffmpeg.run_graph(graph, timeout=30, on_progress=blocks.append)
    assert time.monotonic() - started > 3.5
    assert len(blocks) >= 3


def test_steplog_heartbeat_is_throttled_by_its_clock():
    now = [100.0]
    calls = []
    steps = StepLog(lambda records: calls.append(now[0]), heartbeat_seconds=2.0, clock=lambda: now[0])
    with steps.step("frames") as record:
        for i in range(10):
            now[0] += 0.5
            steps.progress(record, frame=i)
    # 5 s of work: a heartbeat each 2 s after the log was made, then the step's end.
    assert calls == [102.0, 104.0, 105.0]
    assert steps.as_list()[0]["output"] == {"frame": 9}
    steps.beat()
    assert len(calls) == 3  # nothing new since the last change


@pytest.mark.parametrize(
    "node",
    [
        ffmpeg_python.input("concat:/etc/passwd|/etc/hosts", f="matroska", protocol_whitelist="file"),
        ffmpeg_python.input("file:/tmp/x.mkv", f="hls", protocol_whitelist="file"),
        ffmpeg_python.input("file:/tmp/x.mkv", f="matroska"),
        ffmpeg_python.input("file:/tmp/x.mkv", protocol_whitelist="file"),
        ffmpeg_python.input("pipe:0", f="rawvideo"),  # no stdin given
    ],
)
def test_graphs_with_unsafe_inputs_never_run(node):
    with pytest.raises(UnsupportedMedia):
        ffmpeg.graph_command(node.output("-", f="null"))


def test_safe_input_forces_the_file_protocol_and_the_demuxer(clip):
    argv = ffmpeg.graph_command(ffmpeg.safe_input(clip, demuxer="matroska").output("-", f="null"))
    i = argv.index("-i")
    assert argv[i + 1] == f"file:{clip.resolve()}"
    assert argv[argv.index("-f") + 1] == "matroska" and argv.index("-f") < i
    assert argv[argv.index("-protocol_whitelist") + 1] == "file"
    with pytest.raises(UnsupportedMedia):
        ffmpeg.safe_input(clip, demuxer="hls")


def test_stdin_frames_are_fed_without_blocking_past_the_deadline(tmp_path):
    """ffmpeg that reads slowly (here: -re) cannot hold the feeding thread past the deadline."""
    from media.processors.base import ProcessingTimeout

    frame = bytes(64 * 48 * 3)
    source = ffmpeg.raw_frames_input(width=64, height=48, fps=25)
    out = tmp_path / "o.mp4"
    slow = ffmpeg_python.output(source, str(out), f="mp4").global_args("-re")
    started = time.monotonic()
    with pytest.raises(ProcessingTimeout):
        ffmpeg.run_graph(slow, timeout=1.0, outputs=[out], stdin=(frame for _ in range(100_000)))
    assert time.monotonic() - started < 3
    assert not out.exists()
