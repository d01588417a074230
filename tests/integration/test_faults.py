"""Proof under faults (issue: production mode): nothing is lost or done twice when workers die,
the broker is down at commit, messages are duplicated, a file is poison, sweeps race, or the AI
provider misbehaves. Real processes, real PostgreSQL, Redis and S3 on loopback."""

import hashlib
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from tests.integration.stack import ROOT, fault_env, wait_for
from tests.integration.test_system import create_post, jpeg_with_gps, make_video
from tests.moderation.fake_hive import Reply

pytestmark = pytest.mark.integration


def attach(s, post_id, name, data, content_type):
    r = s.post(f"{s.base}/api/v1/content/posts/{post_id}/media", files={"file": (name, data, content_type)})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def runs(stack, media_id):
    return stack.sql(
        "SELECT result, error_class, attempt FROM media_processorrun WHERE media_id = %s ORDER BY started_at",
        media_id,
    )


def media_keys(s3_client, bucket, owner, media_id):
    listing = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"media/{owner}/{media_id}/")
    return sorted(o["Key"].rsplit("/", 1)[1] for o in listing.get("Contents", []))


def test_worker_killed_mid_transcode_heals_through_the_sweep(stack, tmp_path, s3_client, s3_server):
    s = stack.session()
    post_id = create_post(s, "video")
    data = make_video(
        tmp_path / "long.avi", seconds=40, size="1280x720", codec="mpeg4", container_args=("-q:v", "5")
    )
    media_id = attach(s, post_id, "long.avi", data, "video/x-msvideo")
    original_sha = hashlib.sha256(data).hexdigest()

    def transcoding():
        steps = stack.sql("SELECT steps FROM media_processorrun WHERE media_id = %s", media_id)
        return steps and any(
            st["name"] == "transcode"
            and st["status"] == "running"
            and (st["output"] or {}).get("out_time_s", 0) > 0
            for st in steps[0][0]
        )

    wait_for(transcoding, timeout=60, what="transcode under way")
    dead_pids = [w.proc.pid for w in stack.workers if w.alive]
    stack.kill_workers()  # SIGKILL the whole pool mid-transcode
    assert stack.media_status(media_id) == "processing"
    stack.start_worker()
    # Redis hands the dead worker's message to the new pool once its heartbeat is stale (3 s here,
    # 60 s by default); the runner sees the same message id and takes over as attempt 2.
    stack.wait_media(media_id, timeout=180)
    assert [r[:2] for r in runs(stack, media_id)] == [("failed", "WorkerLost"), ("succeeded", "")]
    # The sweep, the other safety net, now finds nothing to do.
    assert "0 matched" in stack.manage("sweep_pending_media", "--stuck-minutes", "1").stdout
    _, bucket = s3_server
    owner = s.user_id
    keys = media_keys(s3_client, bucket, owner, media_id)
    variants = stack.sql("SELECT variants FROM media_media WHERE id = %s", media_id)[0][0]
    expected = ["original.avi"]
    for variant in variants.values():
        expected.append(variant["key"].rsplit("/", 1)[1])
        expected += list(variant.get("files", {}))  # an HLS tree's playlists, init and media segments
    assert keys == sorted(expected)  # one set of variants, nothing partial
    body = s3_client.get_object(Bucket=bucket, Key=f"media/{owner}/{media_id}/original.avi")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == original_sha  # the original is intact
    leftovers = [
        p
        for p in __import__("pathlib").Path("/tmp").glob("postflow-video-p*")
        if any(f"-p{pid}-" in p.name for pid in dead_pids)
    ]
    assert leftovers == []  # the new worker reaped the dead one's scratch folder


def _ffmpeg_pids(scratch_marker: str) -> set[int]:
    """Running (not zombie) processes whose command line names a scratch folder matching the marker."""
    found = set()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and "ffmpeg" in cmdline and scratch_marker in cmdline:
            found.add(int(entry.name))
    return found


def test_killed_worker_leaves_no_ffmpeg_running(stack, tmp_path):
    """Issue 9 row 6: kill -9 the video worker's process group mid-transcode, as the README's
    healing demo does. Its ffmpeg (its own process group) must not run on beside the retry: it dies
    with its worker (PR_SET_PDEATHSIG in processors/ffmpeg.py) or, at the latest, when the next
    worker boots and reaps the dead worker's scratch folder."""
    s = stack.session()
    post_id = create_post(s, "video")
    data = make_video(
        tmp_path / "long.avi", seconds=40, size="1280x720", codec="mpeg4", container_args=("-q:v", "5")
    )
    media_id = attach(s, post_id, "long.avi", data, "video/x-msvideo")

    def transcoding():
        steps = stack.sql("SELECT steps FROM media_processorrun WHERE media_id = %s", media_id)
        return steps and any(st["name"] == "transcode" and st["status"] == "running" for st in steps[0][0])

    wait_for(transcoding, timeout=60, what="transcode under way")
    worker_pids = stack.worker_pids()
    markers = [f"postflow-video-p{pid}-" for pid in worker_pids]
    ours = wait_for(
        lambda: set().union(*(_ffmpeg_pids(m) for m in markers)), timeout=30, what="the job's ffmpeg"
    )
    stack.kill_workers()  # SIGKILL the worker's process group; ffmpeg runs in a group of its own
    stack.start_worker()  # boots, finds the dead worker's scratch folder, kills what works in it
    wait_for(
        lambda: not set().union(*(_ffmpeg_pids(m) for m in markers)) & ours,
        timeout=5,  # not left to finish its transcode: killed at once
        what="the dead worker's ffmpeg to be gone",
    )
    assert not [p for m in markers for p in Path("/tmp").glob(m + "*")]  # scratch folders removed
    stack.wait_media(media_id, timeout=240)  # and the job still heals


def test_heavy_media_of_one_account_do_not_hold_back_another(stack):
    """Issue 9 row 5 (starvation): four slow images of account A on a 2-thread image worker; a normal
    JPEG of account B is processed while A's wait their turn (per-user fairness)."""
    a, b = stack.session(), stack.session()
    slow = [jpeg_with_gps(300 + i, 200) for i in range(4)]
    env = fault_env(
        POSTFLOW_FAULT_SLOW_SHA256=",".join(hashlib.sha256(d).hexdigest() for d in slow),
        POSTFLOW_FAULT_SLOW_SECONDS="12",
    )
    stack.kill_workers()
    stack.start_worker(threads=2, env=env)
    try:
        heavy = [attach(a, create_post(a, "image"), f"{i}.jpg", d, "image/jpeg") for i, d in enumerate(slow)]
        wait_for(lambda: "processing" in map(stack.media_status, heavy), timeout=30, what="A's first job")
        started = time.monotonic()
        normal = attach(b, create_post(b, "image"), "b.jpg", jpeg_with_gps(320, 240), "image/jpeg")
        stack.wait_media(normal, timeout=30)
        waited = time.monotonic() - started
        still = [stack.media_status(m) for m in heavy]
        assert waited < 10, f"B's JPEG waited {waited:.1f} s behind A's heavy media"
        assert still.count("ready") <= 1 and still.count("processing") <= 1, still
        for media_id in heavy:
            stack.wait_media(media_id, timeout=180)
        attempts = stack.sql("SELECT attempts FROM media_media WHERE id = ANY(%s::uuid[])", heavy)
        assert {row[0] for row in attempts} == {1}  # waiting for a slot used no attempt
    finally:
        stack.kill_workers()
        stack.start_worker()


def test_broker_down_at_commit_loses_nothing(stack):
    s = stack.session()
    post_id = create_post(s, "image")
    stack.redis.stop()
    try:
        started = time.monotonic()
        media_id = attach(s, post_id, "a.jpg", jpeg_with_gps(300, 200), "image/jpeg")
        assert time.monotonic() - started < 10
        assert stack.media_status(media_id) == "pending"
        ready = requests.get(stack.base + "/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["broker"]["ok"] is False
    finally:
        stack.redis.start()
    time.sleep(1)
    assert stack.media_status(media_id) == "pending"  # the message really was lost
    if not any(w.alive for w in stack.workers):
        stack.start_worker()
    stack.manage("sweep_pending_media", "--pending-grace-minutes", "0")
    stack.wait_media(media_id)
    assert requests.get(stack.base + "/readyz").status_code == 200


def test_duplicate_delivery_at_once_gives_one_result(stack):
    stack.set_platform(processor_event_trigger_media_enabled=False)
    s = stack.session()
    post_id = create_post(s, "image")
    media_id = attach(s, post_id, "a.jpg", jpeg_with_gps(2400, 1800), "image/jpeg")
    broker = RedisBroker(url=stack.redis.url, namespace="postflow-it")
    broker.declare_queue("media.image")
    for _ in range(2):
        broker.enqueue(
            Message(
                queue_name="media.image",
                actor_name="process_image_media",
                args=(media_id,),
                kwargs={},
                options={},
                message_id=str(uuid.uuid4()),
                message_timestamp=int(time.time() * 1000),
            )
        )
    stack.wait_media(media_id)
    time.sleep(2)  # let the second delivery finish too
    assert [r[0] for r in runs(stack, media_id)] == ["succeeded"]
    assert stack.sql("SELECT attempts FROM media_media WHERE id = %s", media_id)[0][0] == 1


def test_poison_file_fails_after_max_attempts_and_others_flow(stack):
    s = stack.session()
    poison = jpeg_with_gps(320, 240)
    sha = hashlib.sha256(poison).hexdigest()
    stack.kill_workers()
    env = fault_env(POSTFLOW_FAULT_KILL_SHA256=sha)
    stack.start_worker(env=env)
    stack.supervise(env=env)
    try:
        bad = attach(s, create_post(s, "image"), "poison.jpg", poison, "image/jpeg")
        stack.wait_media(bad, "failed", timeout=180)
        err = stack.sql("SELECT processing_error, attempts FROM media_media WHERE id = %s", bad)[0]
        assert "3 times" in err[0] and err[1] == 3
        good = attach(s, create_post(s, "image"), "fine.jpg", jpeg_with_gps(330, 250), "image/jpeg")
        stack.wait_media(good, timeout=60)
    finally:
        stack.stop_supervising()
        stack.kill_workers()
        stack.start_worker()


def test_two_sweeps_at_once_queue_each_medium_once(stack):
    stack.set_platform(processor_event_trigger_media_enabled=False)
    s = stack.session()
    ids = [
        attach(s, create_post(s, "image"), f"{i}.jpg", jpeg_with_gps(200 + i, 150), "image/jpeg")
        for i in range(4)
    ]
    stack.kill_workers()  # nothing consumes: we count what the sweeps queue
    stack.sql(
        "UPDATE media_media SET processing_status = 'processing', updated_at = now() - interval '2 hours' "
        "WHERE id = ANY(%s::uuid[])",
        ids,
    )
    client = stack.redis.client()
    client.delete("postflow-it:media.image", "postflow-it:media.image.msgs")
    cmd = [sys.executable, "manage.py", "sweep_pending_media", "--stuck-minutes", "30"]
    procs = [
        subprocess.Popen(
            cmd, cwd=ROOT, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert sorted(o[2] for o in outs) in ([0, 0], [0, 3]), outs
    queued = [json.loads(v)["args"][0] for v in client.hvals("postflow-it:media.image.msgs")]
    assert sorted(queued) == sorted(ids)  # every stuck medium exactly once
    stack.start_worker()
    for media_id in ids:
        stack.wait_media(media_id)


@pytest.mark.parametrize(
    "replies",
    [
        [Reply(status=500, body={"error": "down"})] * 6,
        [Reply(status=200, body=b"<html>not json</html>")] * 6,
        [Reply(status=200, body={"status": [{"response": {"output": []}}]}, delay=3.0)] * 6,
    ],
    ids=["down", "garbage", "slow"],
)
def test_ai_provider_failures_never_publish(stack, fake_hive, replies):
    stack.set_platform(moderation_mode="ai_prescreen")
    fake_hive.replies.clear()
    fake_hive.queue(*replies)
    s = stack.session()
    post_id = create_post(s, "text", body="Hello there")
    r = s.post(f"{s.base}/api/v1/content/posts/{post_id}/publish")
    assert r.status_code == 202 and r.json()["status"] == "pending_review"

    def final_error():
        rows = stack.sql("SELECT decision, raw FROM moderation_aireview WHERE post_id = %s", post_id)
        return any(d == "error" and raw.get("final") for d, raw in rows)

    wait_for(final_error, timeout=60, what="review retries spent")
    post = s.get(f"{s.base}/api/v1/content/posts/{post_id}").json()
    assert post["status"] == "pending_review"
    assert requests.get(f"{s.base}/api/v1/content/posts/{post_id}").status_code == 404
    fake_hive.replies.clear()


def test_ai_provider_recovers_and_publishes(stack, fake_hive):
    stack.set_platform(moderation_mode="ai_prescreen")
    fake_hive.replies.clear()  # the default reply is a clean verdict
    s = stack.session()
    post_id = create_post(s, "text", body="Hello there")
    s.post(f"{s.base}/api/v1/content/posts/{post_id}/publish")
    wait_for(
        lambda: s.get(f"{s.base}/api/v1/content/posts/{post_id}").json()["status"] == "published",
        timeout=60,
        what="published after a clean verdict",
    )


def test_many_concurrent_attaches_all_finish(stack):
    s = stack.session()
    ids, errors = [], []

    def one(i):
        try:
            ids.append(
                attach(s, create_post(s, "image"), f"{i}.jpg", jpeg_with_gps(300, 200 + i), "image/jpeg")
            )
        except AssertionError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    for media_id in ids:
        stack.wait_media(media_id)
