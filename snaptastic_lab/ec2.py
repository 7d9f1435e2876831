"""EC2 for the lab: moto's EC2 server behind a WSGI middleware that makes it behave like the real service.

The middleware records every call, applies the fault knobs, forwards to moto, and fills the gaps where moto
differs from AWS's documented behaviour:

- CreateVolume honours ClientToken: a repeated token answers the same volume (moto creates a second one), a
  token reused with other parameters is IdempotentParameterMismatch; the answer says `creating`, as EC2's does.
- CreateVolume refuses a pending snapshot and a size below the snapshot's.
- DetachVolume without InstanceId takes it from the volume's attachment (moto demands it).
- CreateSnapshots honours `ExcludeDataVolumeIds` and `CopyTagsFromSource=volume` (moto ignores both); the lab
  answers it itself from moto's models.
- DescribeSnapshots honours OwnerIds (`self` is the lab's account); moto ignores them.
- AttachVolume refuses a volume that is still `creating`, already attached or in another zone, an instance
  that is not running, and a device name already in use.
- ModifyInstanceAttribute naming an unmapped device is a 400, not moto's HTTP 500.
- RegisterImage remembers the snapshots of its block device mapping, and DescribeImages answers the
  `block-device-mapping.snapshot-id` filter with them (moto ignores the one and refuses the other).
- A DetachVolume of a volume whose device is still mounted stays `busy`, as on EC2, and completes once it is
  unmounted.
- Snapshot StartTime: moto's EC2 serializer writes every timestamp as `...:SS.000Z`; the lab gives each
  snapshot a distinct, increasing start time in milliseconds and writes it into the snapshot responses.
- Volumes stay `creating`, attachments `attaching` or `detaching` and snapshots `pending` for as long as the
  knobs say; a clock thread finishes these transitions even when nobody calls.

Each lab is its own moto account (the `x-moto-account-id` header), so labs side by side do not see each other.
Device side effects (sparse files, loop devices, nodes) happen before the answer is sent, so what the agent
sees next is already consistent with what the API said.
"""

from __future__ import annotations

import io
import math
import re
import select
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from moto.ec2.models.elastic_block_store import Snapshot, Volume

from snaptastic_lab import devices
from snaptastic_lab.faults import Faults
from snaptastic_lab.throttle import TokenBuckets

INTERNAL_HEADER = "X-Snaptastic-Lab"
XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"

StartResponse = Callable[..., Any]
Answer = tuple[str, list[tuple[str, str]], bytes]


class _LabVolume(Volume):
    """A moto volume that reports `creating` until its time has come."""

    lab_ready_at: float = 0.0

    @property
    def status(self) -> str:
        if time.monotonic() < self.lab_ready_at:
            return "creating"
        return Volume.status.fget(self)  # type: ignore[attr-defined,no-any-return]


class _LabSnapshot(Snapshot):
    """A moto snapshot that is `pending`, with growing progress, until its time has come."""

    lab_started_at: float = 0.0
    lab_done_at: float = 0.0
    lab_fails: bool = False  # ends in `error` instead of `completed`, as EBS reports a snapshot it could not take

    @property  # type: ignore[override]
    def status(self) -> str:
        if time.monotonic() < self.lab_done_at:
            return "pending"
        return "error" if self.lab_fails else "completed"

    @status.setter
    def status(self, value: str) -> None:
        pass

    @property
    def progress(self) -> str:
        span = self.lab_done_at - self.lab_started_at
        if span <= 0 or time.monotonic() >= self.lab_done_at:
            return "100%"
        done = (time.monotonic() - self.lab_started_at) / span
        return f"{min(99, int(done * 100))}%"



def call_moto(moto_app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]], environ: dict[str, Any],
              params: dict[str, str], account_id: str) -> Answer:
    """The request, with these form parameters, answered by moto's WSGI app in the lab's account (each lab
    has its own account in moto, so labs running side by side do not see each other)."""
    body = urlencode(params).encode()
    inner = dict(environ)
    inner["wsgi.input"] = io.BytesIO(body)
    inner["CONTENT_LENGTH"] = str(len(body))
    inner["HTTP_X_MOTO_ACCOUNT_ID"] = account_id
    captured: dict[str, Any] = {}

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        captured["status"], captured["headers"] = status, headers
        return lambda _chunk: None

    chunks = moto_app(inner, capture)
    try:
        payload = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
    return captured["status"], headers, payload

def error_answer(status: int, code: str, message: str) -> Answer:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()
    reason = {400: "Bad Request", 403: "Forbidden", 500: "Internal Server Error", 503: "Service Unavailable"}
    return f"{status} {reason.get(status, 'Error')}", [("Content-Type", "text/xml")], body


def _ok(body: str) -> Answer:
    return "200 OK", [("Content-Type", "text/xml")], body.encode()


def _iso_ms(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _indexed(params: dict[str, str], prefix: str) -> list[str]:
    """`Prefix.1`, `Prefix.2`, ... in order."""
    found = []
    number = 1
    while f"{prefix}.{number}" in params:
        found.append(params[f"{prefix}.{number}"])
        number += 1
    return found


def _tag_specifications(params: dict[str, str], resource_type: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    spec = 1
    while f"TagSpecification.{spec}.ResourceType" in params:
        if params[f"TagSpecification.{spec}.ResourceType"] == resource_type:
            tag = 1
            while f"TagSpecification.{spec}.Tag.{tag}.Key" in params:
                key = params[f"TagSpecification.{spec}.Tag.{tag}.Key"]
                tags[key] = params.get(f"TagSpecification.{spec}.Tag.{tag}.Value", "")
                tag += 1
        spec += 1
    return tags


class Ec2Emulator:
    """WSGI middleware in front of moto's EC2 app, plus the lab's device bookkeeping."""

    def __init__(
        self,
        moto_app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
        backend: Any,
        faults: Faults,
        workdir: Path,
        dev_root: Path,
        sys_root: Path,
        device_style: str,
        account_id: str,
        regional: Callable[[str], Any] | None = None,
    ) -> None:
        self.moto_app = moto_app
        self.account_id = account_id
        self.backend = backend  # the lab's region's; while a request of another region is handled, that one's
        self.home_backend = backend
        # Another region's backend, made fresh the first time a request names it (copies of snapshots go there).
        self._regional = regional
        self.backends: dict[str, Any] = {}
        self.faults = faults
        self.volumes_dir = workdir / "volumes"
        self.snapshots_dir = workdir / "snapshots"
        self.dev_root = dev_root
        self.sys_root = sys_root
        self.device_style = device_style
        self.lock = threading.RLock()
        self.calls: list[tuple[float, str]] = []
        self.requests: list[tuple[float, str, dict[str, str]]] = []
        # (action, arrived, answered): time.time() when a call came in and when its answer was ready.
        self.served: list[tuple[str, float, float]] = []
        self.current_instance: str | None = None
        self.root_volumes: dict[str, str] = {}
        self.tables: dict[str, devices.DeviceTable] = {}
        # Instances that are virtual machines: their volumes are hot-plugged into the VM (qemu.HotplugTable).
        self.machines: dict[str, Any] = {}
        # Instances running beside the current one (a cluster booting at once), each with its own dev and sys roots.
        self.neighbours: dict[str, tuple[Path, Path]] = {}
        self.loops_created: set[str] = set()
        self._client_tokens: dict[str, tuple[dict[str, str], Answer, str]] = {}
        self._pending_attach: dict[str, tuple[float, str, bool]] = {}
        self._pending_detach: dict[str, tuple[str, float]] = {}
        self._image_snapshots: dict[str, set[str]] = {}
        self._last_start = datetime(2000, 1, 1)
        self.stopped = threading.Event()
        self._buckets: TokenBuckets | None = None
        self.throttled = 0  # requests the token buckets refused

    # Files

    def volume_file(self, volume_id: str) -> Path:
        return self.volumes_dir / f"{volume_id}.img"

    def snapshot_file(self, snapshot_id: str) -> Path:
        return self.snapshots_dir / f"{snapshot_id}.img"

    # Devices of the instances

    def table(self, instance_id: str) -> devices.DeviceTable:
        if instance_id not in self.tables and instance_id in self.machines:
            self.tables[instance_id] = self.machines[instance_id]
        if instance_id not in self.tables:
            dev_root, sys_root = self.neighbours.get(instance_id, (self.dev_root, self.sys_root))
            self.tables[instance_id] = devices.DeviceTable(dev_root, sys_root, self.device_style)
        return self.tables[instance_id]

    def add_neighbour(self, instance_id: str, root_volume: str | None, dev_root: Path, sys_root: Path) -> None:
        """Another running instance whose devices appear under roots of its own."""
        with self.lock:
            self.neighbours[instance_id] = (dev_root, sys_root)
            if root_volume:
                self.root_volumes[instance_id] = root_volume
                self.table(instance_id).add_root(root_volume)

    def switch_instance(self, instance_id: str, root_volume: str | None) -> None:
        """Make `instance_id` the machine whose devices appear under the dev root."""
        with self.lock:
            if self.current_instance and self.current_instance in self.tables:
                # The previous machine is elsewhere now: its devices leave this one's /dev.
                self.tables[self.current_instance].detach_all(force_unmount=True)
            self.current_instance = instance_id
            if root_volume:
                self.root_volumes[instance_id] = root_volume
                self.table(instance_id).add_root(root_volume)

    def device_for(self, volume_id: str) -> Path | None:
        with self.lock:
            self.refresh()
            if self.current_instance is None or self.current_instance not in self.tables:
                return None
            return self.tables[self.current_instance].device_for(volume_id)

    def _materialize(self, volume_id: str, instance_id: str, device: str) -> None:
        if instance_id != self.current_instance and instance_id not in self.neighbours:
            return
        image = self.volume_file(volume_id)
        if not image.exists():
            devices.make_sparse(image, self._backend_of(volume_id).get_volume(volume_id).size)
        entry = self.table(instance_id).attach(volume_id, image, device)
        if entry.loop:
            self.loops_created.add(entry.loop)

    def refresh(self) -> None:
        """Let time pass: finish attachments and busy detaches that are due."""
        with self.lock:
            now = time.monotonic()
            for volume_id, (due, device, appears) in list(self._pending_attach.items()):
                if now < due:
                    continue
                volume = self._backend_of(volume_id).volumes.get(volume_id)
                if volume is None or volume.attachment is None:
                    del self._pending_attach[volume_id]
                    continue
                if appears:
                    try:
                        self._materialize(volume_id, volume.attachment.instance.id, device)
                    except Exception:
                        # Stay `attaching` and try again at the next call rather than lose the device.
                        traceback.print_exc()
                        continue
                del self._pending_attach[volume_id]
                volume.attachment.status = "attached"
                mapping = volume.attachment.instance.block_device_mapping.get(device)
                if mapping is not None:
                    mapping.status = "attached"
            for volume_id, (instance_id, due) in list(self._pending_detach.items()):
                table = self.tables.get(instance_id)
                if now < due or (table is not None and table.is_mounted(volume_id)):
                    continue
                del self._pending_detach[volume_id]
                backend = self._backend_of(volume_id)
                volume = backend.volumes.get(volume_id)
                if volume is not None and volume.attachment is not None:
                    backend.detach_volume(volume_id, instance_id, volume.attachment.device)
                if table is not None:
                    table.detach(volume_id)

    def start_clock(self, interval: float = 0.05) -> None:
        """Let time pass without calls too: a device appears when its attachment is due, as on EC2."""

        def tick() -> None:
            while not self.stopped.wait(interval):
                if not (self._pending_attach or self._pending_detach):
                    continue
                try:
                    self.refresh()
                except Exception:
                    traceback.print_exc()

        threading.Thread(target=tick, name="lab-clock", daemon=True).start()

    def teardown_instance(self, instance_id: str) -> None:
        with self.lock:
            table = self.tables.pop(instance_id, None)
            if table is not None:
                table.detach_all(force_unmount=True)
            for volume_id in [v for v, (i, _) in self._pending_detach.items() if i == instance_id]:
                del self._pending_detach[volume_id]

    def teardown_all(self) -> None:
        """The lab is stopping: release every device; calls still held or arriving change nothing."""
        self.stopped.set()
        with self.lock:
            for instance_id in list(self.tables):
                self.teardown_instance(instance_id)
            self._pending_attach.clear()

    # WSGI

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        params = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        action = params.get("Action", "")
        internal = environ.get("HTTP_" + INTERNAL_HEADER.upper().replace("-", "_")) == "internal"
        answer: Answer | None = None
        if not internal:
            stamp = time.time()
            self.calls.append((stamp, action))
            self.requests.append((stamp, action, params))
            answer = self._fault(action, environ.get("werkzeug.socket"), params)
        if answer is None:
            answer = self._handle(environ, action, params)
        if not internal:
            self.served.append((action, stamp, time.time()))
        status, headers, payload = answer
        start_response(status, [*headers, ("Content-Length", str(len(payload)))])
        return [payload]

    def _region_backend(self, environ: dict[str, Any]) -> Any:
        """The backend of the region the request was signed for (moto's server picks the same one)."""
        m = re.search(r"Credential=[^/]+/\d+/([a-z0-9-]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        region = m.group(1) if m else ""
        if not region or self._regional is None or region == self.home_backend.region_name:
            return self.home_backend
        if region not in self.backends:
            self.backends[region] = self._regional(region)
        return self.backends[region]

    def _backend_of(self, volume_id: str) -> Any:
        """The backend holding a volume: the clock finishes attachments outside any request, and an instance in
        another region must not see its volumes taken for gone (ids are unique across regions)."""
        for backend in (self.backend, self.home_backend, *self.backends.values()):
            if volume_id in backend.volumes:
                return backend
        return self.backend

    def _has_volume(self, volume_id: str) -> bool:
        return volume_id in self._backend_of(volume_id).volumes

    def _handle(self, environ: dict[str, Any], action: str, params: dict[str, str]) -> Answer:
        with self.lock:
            if self.stopped.is_set():
                return error_answer(503, "Unavailable", "The service is unavailable.")
            handler = getattr(self, f"_do_{action}", None)
            self.backend = self._region_backend(environ)
            try:
                self.refresh()
                if handler is not None:
                    return handler(environ, params)  # type: ignore[no-any-return]
                return self.forward(environ, params)
            except _Refused as refused:
                return refused.answer
            except Exception as exc:
                # A lab failure (losetup, cp, mknod) must reach the test as an answer, with the cause on stderr.
                traceback.print_exc()
                return error_answer(500, "InternalError", f"lab: {action} failed: {exc}")
            finally:
                self.backend = self.home_backend

    def _fault(self, action: str, client: socket.socket | None, params: dict[str, str]) -> Answer | None:
        faults = self.faults
        if faults.latency > 0:
            time.sleep(faults.latency)
        hang = faults.hang_actions.get(action)
        if hang and not self._hold(hang, client):
            # The caller went away (or the lab stopped) while the call was held: it never reached EC2.
            return error_answer(503, "Unavailable", "The request was abandoned.")
        if action in faults.fail_actions:
            status, code, message = faults.fail_actions[action]
            return error_answer(status, code, message)
        if faults.token_buckets > 0:
            if self._buckets is None or self._buckets.scale != faults.token_buckets:
                self._buckets = TokenBuckets(faults.token_buckets)
            if not self._buckets.take(action, params):
                self.throttled += 1
                return error_answer(503, "RequestLimitExceeded", "Request limit exceeded.")
        if faults.chance(faults.throttle_rate):
            return error_answer(400, "RequestLimitExceeded", "Request limit exceeded.")
        if faults.chance(faults.error_rate):
            status, code = faults.pick(((503, "Unavailable"), (500, "InternalError")))
            message = "The service is unavailable. Please try again shortly."
            if status == 500:
                message = "An internal error has occurred."
            return error_answer(status, code, message)
        return None

    def _hold(self, seconds: float, client: socket.socket | None) -> bool:
        """Hold a call for `seconds`; False as soon as its caller disconnects or the lab stops."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.stopped.wait(min(left, 0.05)):
                return False
            if client is not None and _disconnected(client):
                return False
        return True

    def forward(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        return call_moto(self.moto_app, environ, params, self.account_id)

    # Actions

    def _do_CreateVolume(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        token = params.get("ClientToken")
        if token and token in self._client_tokens:
            seen, answer, volume_id = self._client_tokens[token]
            if seen != params or volume_id not in self.backend.volumes:
                return error_answer(
                    400,
                    "IdempotentParameterMismatch",
                    "The client token you have provided is associated with a resource that is already "
                    "deleted or has different parameters. Please use a different client token.",
                )
            return answer
        snapshot = self.backend.snapshots.get(params.get("SnapshotId", ""))
        if snapshot is not None:
            if snapshot.status == "pending":
                return error_answer(400, "IncorrectState", "Snapshot is in invalid state - pending")
            if "Size" in params and int(params["Size"]) < snapshot.volume_size:
                return error_answer(
                    400,
                    "InvalidParameterValue",
                    f"Volume of size {params['Size']}GB is smaller than snapshot '{snapshot.id}', "
                    f"expect size >= {snapshot.volume_size}GB",
                )
        answer = self.forward(environ, params)
        if not answer[0].startswith("200"):
            return answer
        volume_id = _first(rb"<volumeId>(vol-[0-9a-f]+)</volumeId>", answer[2])
        volume = self.backend.volumes[volume_id]
        snapshot_id = params.get("SnapshotId")
        image = self.volume_file(volume_id)
        if snapshot_id and self.snapshot_file(snapshot_id).exists():
            devices.copy_sparse(self.snapshot_file(snapshot_id), image)
        devices.make_sparse(image, int(volume.size))
        seconds = self.faults.volume_creating_seconds
        if seconds > 0:
            volume.__class__ = _LabVolume
            volume.lab_ready_at = time.monotonic() + seconds
        # EC2 always answers CreateVolume with `creating`; moto says `available`.
        payload = answer[2].replace(b"<status>available</status>", b"<status>creating</status>", 1)
        answer = (answer[0], answer[1], payload)
        if token:
            self._client_tokens[token] = (dict(params), answer, volume_id)
        return answer

    def _do_DeleteVolume(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        answer = self.forward(environ, params)
        if answer[0].startswith("200"):
            self.volume_file(params["VolumeId"]).unlink(missing_ok=True)
        return answer

    def _do_AttachVolume(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        volume_id = params.get("VolumeId", "")
        instance_id = params.get("InstanceId", "")
        device = params.get("Device", "")
        volume = self.backend.volumes.get(volume_id)
        instance = self._instance(instance_id)
        if volume is not None and instance is not None:
            if instance.state not in ("running", "stopped"):
                raise _Refused(error_answer(400, "IncorrectInstanceState", f"The instance '{instance_id}' is not 'running'."))
            if volume.status == "creating":
                raise _Refused(error_answer(400, "IncorrectState", f"{volume_id} is not 'available'."))
            if volume.attachment is not None:
                raise _Refused(error_answer(400, "VolumeInUse", f"{volume_id} is already attached to an instance"))
            if volume.zone is not None and volume.zone.name != instance._placement.zone:
                raise _Refused(
                    error_answer(
                        400,
                        "InvalidVolume.ZoneMismatch",
                        f"The volume '{volume_id}' is not in the same availability zone as instance '{instance_id}'",
                    )
                )
            if device in instance.block_device_mapping:
                raise _Refused(
                    error_answer(
                        400,
                        "InvalidParameterValue",
                        f"Invalid value '{device}' for unixDevice. Attachment point " + device + " is already in use",
                    )
                )
        answer = self.forward(environ, params)
        if not answer[0].startswith("200"):
            return answer
        appears = not self.faults.device_never_appears
        stuck = float(self.faults.attach_stuck or 0)
        if stuck > 0:
            attached = self.backend.volumes[volume_id].attachment
            attached.status = "attaching"
            self.backend.get_instance(instance_id).block_device_mapping[device].status = "attaching"
            due = math.inf if math.isinf(stuck) else time.monotonic() + stuck
            self._pending_attach[volume_id] = (due, device, appears)
        elif appears:
            try:
                self._materialize(volume_id, instance_id, device)
            except Exception:
                # The device could not be made: undo the attachment so the call fails as a whole.
                self.backend.detach_volume(volume_id, instance_id, device)
                raise
        return answer

    def _do_DetachVolume(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        volume_id = params.get("VolumeId", "")
        volume = self.backend.volumes.get(volume_id)
        if volume is None or volume.attachment is None:
            if volume is None:
                return error_answer(400, "InvalidVolume.NotFound", f"The volume '{volume_id}' does not exist.")
            return error_answer(400, "IncorrectState", f"Volume '{volume_id}' is in the 'available' state.")
        attachment = volume.attachment
        instance_id = attachment.instance.id
        if params.get("InstanceId", instance_id) != instance_id:
            return error_answer(
                400,
                "InvalidAttachment.NotFound",
                f"The volume {volume_id} is not attached to instance {params['InstanceId']}",
            )
        params = {**params, "InstanceId": instance_id}
        force = params.get("Force", "false").lower() == "true"
        table = self.tables.get(instance_id)
        busy = table is not None and table.is_mounted(volume_id) and not force
        seconds = self.faults.detach_seconds
        if busy or seconds > 0:
            # EC2 accepts the call; the attachment is `detaching` for a while, or `busy` until the OS lets the
            # device go. The device leaves the instance at once unless it is busy.
            attachment.status = "busy" if busy else "detaching"
            self._pending_attach.pop(volume_id, None)
            self._pending_detach[volume_id] = (instance_id, time.monotonic() + seconds)
            if not busy and table is not None:
                table.detach(volume_id, force_unmount=force)
            return _ok(
                f'<?xml version="1.0" encoding="UTF-8"?>\n<DetachVolumeResponse xmlns="{XMLNS}">'
                f"<requestId>{uuid.uuid4()}</requestId><volumeId>{volume_id}</volumeId>"
                f"<instanceId>{instance_id}</instanceId><device>{escape(attachment.device)}</device>"
                f"<status>{attachment.status}</status><attachTime>{_iso_ms(attachment.attach_time)}</attachTime>"
                "</DetachVolumeResponse>"
            )
        self._pending_attach.pop(volume_id, None)
        self._pending_detach.pop(volume_id, None)
        answer = self.forward(environ, params)
        if answer[0].startswith("200") and table is not None:
            table.detach(volume_id, force_unmount=force)
        return answer

    def _do_CreateSnapshot(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        answer = self.forward(environ, params)
        if not answer[0].startswith("200"):
            return answer
        snapshot_id = _first(rb"<snapshotId>(snap-[0-9a-f]+)</snapshotId>", answer[2])
        self._snapshot_taken(self.backend.snapshots[snapshot_id])
        return self._with_start_times(answer)

    def _do_CopySnapshot(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        """Called in the destination region: the source, in SourceRegion, must exist and be completed; the copy
        gets the source's data, the TagSpecifications, and a start time of its own (AWS's documented behaviour)."""
        source_id = params.get("SourceSnapshotId", "")
        source_region = params.get("SourceRegion", "")
        source_backend = self.home_backend if source_region == self.home_backend.region_name else self.backends.get(source_region)
        source = source_backend.snapshots.get(source_id) if source_backend is not None else None
        if source is None:
            return error_answer(400, "InvalidSnapshot.NotFound", f"The snapshot '{source_id}' does not exist.")
        if source.status != "completed":
            return error_answer(400, "IncorrectState", f"Snapshot '{source_id}' is not 'completed'.")
        answer = self.forward(environ, params)
        if not answer[0].startswith("200"):
            return answer
        copy_id = _first(rb"<snapshotId>(snap-[0-9a-f]+)</snapshotId>", answer[2])
        copy = self.backend.snapshots[copy_id]
        wanted = _tag_specifications(params, "snapshot")
        if wanted:
            self.backend.create_tags([copy_id], wanted)
        if self.snapshot_file(source_id).exists():
            devices.copy_sparse(self.snapshot_file(source_id), self.snapshot_file(copy_id))
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        copy.start_time = now.replace(microsecond=now.microsecond // 1000 * 1000)
        seconds = self.faults.snapshot_pending_seconds  # a copy is a new snapshot: pending as long as one
        if seconds > 0:
            copy.__class__ = _LabSnapshot
            copy.lab_started_at = time.monotonic()
            copy.lab_done_at = copy.lab_started_at + seconds
        return answer

    def _do_CreateSnapshots(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        instance_id = params.get("InstanceSpecification.InstanceId", "")
        instance = self._instance(instance_id)
        if instance is None:
            return error_answer(400, "InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist")
        if params.get("DryRun", "false").lower() == "true":
            return error_answer(412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
        exclude_boot = params.get("InstanceSpecification.ExcludeBootVolume", "false").lower() == "true"
        excluded = set(_indexed(params, "InstanceSpecification.ExcludeDataVolumeId"))
        copy_tags = params.get("CopyTagsFromSource") == "volume"
        extra_tags = _tag_specifications(params, "snapshot")
        description = params.get("Description", "")
        boot_volume = self.root_volumes.get(instance_id) or self._root_volume_of(instance)
        chosen = []
        for mapping in instance.block_device_mapping.values():
            volume_id = mapping.volume_id
            if volume_id == boot_volume:
                if exclude_boot:
                    continue
            elif volume_id in excluded:
                continue
            chosen.append(volume_id)
        items = []
        for volume_id in chosen:
            snapshot = self.backend.create_snapshot(volume_id, description)
            tags: dict[str, str] = {}
            if copy_tags:
                tags.update({t["key"]: t["value"] for t in self.backend.volumes[volume_id].get_tags()})
            tags.update(extra_tags)
            if tags:
                self.backend.create_tags([snapshot.id], tags)
            self._snapshot_taken(snapshot)
            tag_xml = "".join(f"<item><key>{escape(k)}</key><value>{escape(v)}</value></item>" for k, v in tags.items())
            items.append(
                "<item>"
                f"<snapshotId>{snapshot.id}</snapshotId><volumeId>{volume_id}</volumeId>"
                f"<state>{snapshot.status}</state><volumeSize>{snapshot.volume_size}</volumeSize>"
                f"<startTime>{_iso_ms(snapshot.start_time)}</startTime><progress>{snapshot.progress}</progress>"
                f"<ownerId>{snapshot.owner_id}</ownerId><description>{escape(description)}</description>"
                f"<encrypted>{str(bool(snapshot.encrypted)).lower()}</encrypted>"
                f"<tagSet>{tag_xml}</tagSet>"
                "</item>"
            )
        return _ok(
            f'<?xml version="1.0" encoding="UTF-8"?>\n<CreateSnapshotsResponse xmlns="{XMLNS}">'
            f"<requestId>{uuid.uuid4()}</requestId><snapshotSet>{''.join(items)}</snapshotSet>"
            "</CreateSnapshotsResponse>"
        )

    def _do_DescribeSnapshots(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        owners = _indexed(params, "Owner")
        if owners:
            # moto ignores OwnerIds; EC2 answers only those owners' snapshots ("self" is the caller's account).
            params = {k: v for k, v in params.items() if not k.startswith("Owner.")}
            number = 1
            while f"Filter.{number}.Name" in params:
                number += 1
            params[f"Filter.{number}.Name"] = "owner-id"
            for index, owner in enumerate(owners, start=1):
                params[f"Filter.{number}.Value.{index}"] = self.account_id if owner == "self" else owner
        return self._with_start_times(self.forward(environ, params))

    def _do_RegisterImage(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        # moto ignores BlockDeviceMapping.N.Ebs.SnapshotId; remember which snapshots back the image.
        answer = self.forward(environ, params)
        found = re.search(rb"<imageId>(ami-[0-9a-f]+)</imageId>", answer[2])
        if answer[0].startswith("200") and found:
            self._image_snapshots[found.group(1).decode()] = {
                v for k, v in params.items() if k.startswith("BlockDeviceMapping.") and k.endswith(".Ebs.SnapshotId")
            }
        return answer

    def _do_DescribeImages(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        # moto does not know the `block-device-mapping.snapshot-id` filter; EC2 documents it.
        number = next((n for n in range(1, 100) if params.get(f"Filter.{n}.Name") == "block-device-mapping.snapshot-id"), None)
        if number is None:
            return self.forward(environ, params)
        wanted = set(_indexed(params, f"Filter.{number}.Value"))
        images = [ami_id for ami_id, snaps in self._image_snapshots.items() if snaps & wanted]
        params = {k: v for k, v in params.items() if not k.startswith(f"Filter.{number}.")}
        if not images:
            return _ok(f'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeImagesResponse xmlns="{XMLNS}">'
                       f"<requestId>{uuid.uuid4()}</requestId><imagesSet/></DescribeImagesResponse>")
        for index, ami_id in enumerate(images, start=1):
            params[f"ImageId.{index}"] = ami_id
        answer = self.forward(environ, params)
        if not answer[0].startswith("200"):
            return answer
        # moto describes its own auto-created root snapshot; add the snapshots the image was registered with.
        root = ElementTree.fromstring(answer[2])
        uri = root.tag[1 : root.tag.index("}")] if root.tag.startswith("{") else ""  # moto's has no trailing slash
        ns = {"ec2": uri}
        ElementTree.register_namespace("", uri)
        for item in root.findall("ec2:imagesSet/ec2:item", ns):
            ami_id = item.findtext("ec2:imageId", default="", namespaces=ns)
            mapping = item.find("ec2:blockDeviceMapping", ns)
            if mapping is None:
                mapping = ElementTree.SubElement(item, f"{{{uri}}}blockDeviceMapping")
            for index, snap in enumerate(sorted(self._image_snapshots.get(ami_id, ())), start=1):
                entry = ElementTree.SubElement(mapping, f"{{{uri}}}item")
                ElementTree.SubElement(entry, f"{{{uri}}}deviceName").text = f"/dev/sd{chr(ord('e') + index)}"
                ebs = ElementTree.SubElement(entry, f"{{{uri}}}ebs")
                ElementTree.SubElement(ebs, f"{{{uri}}}snapshotId").text = snap
        return answer[0], answer[1], ElementTree.tostring(root, xml_declaration=True, encoding="UTF-8")

    def _do_DeleteSnapshot(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        answer = self.forward(environ, params)
        if answer[0].startswith("200"):
            self.snapshot_file(params["SnapshotId"]).unlink(missing_ok=True)
        return answer

    def _do_ModifyInstanceAttribute(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        instance = self._instance(params.get("InstanceId", ""))
        if instance is not None:
            for number in range(1, 1000):
                name = params.get(f"BlockDeviceMapping.{number}.DeviceName")
                if name is None:
                    break
                if name not in instance.block_device_mapping:
                    # moto answers a KeyError as HTTP 500; EC2 names the bad device.
                    return error_answer(400, "InvalidInstanceAttributeValue", f"No device is currently mapped at {name}")
        return self.forward(environ, params)

    def _do_TerminateInstances(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        answer = self.forward(environ, params)
        if not answer[0].startswith("200"):
            return answer
        for instance_id in _indexed(params, "InstanceId"):
            self.teardown_instance(instance_id)
            for volume_id, (_due, _device, _appears) in list(self._pending_attach.items()):
                if not self._has_volume(volume_id):
                    del self._pending_attach[volume_id]
        # Volumes with DeleteOnTermination went with the instance; so do their files.
        if self.volumes_dir.exists():
            for image in self.volumes_dir.glob("vol-*.img"):
                if not self._has_volume(image.stem):
                    image.unlink(missing_ok=True)
        return answer

    # Helpers

    def _instance(self, instance_id: str) -> Any:
        try:
            return self.backend.get_instance(instance_id)
        except Exception:
            return None

    def _root_volume_of(self, instance: Any) -> str | None:
        mapping = instance.block_device_mapping.get(instance.root_device_name)
        return mapping.volume_id if mapping is not None else None

    def fail_snapshot(self, snapshot_id: str, after: float = 0.0) -> None:
        """Make a snapshot end in `error`, now or once it has been pending for `after` more seconds."""
        snapshot = self.backend.snapshots[snapshot_id]
        if not isinstance(snapshot, _LabSnapshot):
            snapshot.__class__ = _LabSnapshot
            snapshot.lab_started_at = time.monotonic()
        snapshot.lab_done_at = time.monotonic() + after
        snapshot.lab_fails = True

    def _snapshot_taken(self, snapshot: Any) -> None:
        """Copy the data as it is now, give a millisecond start time, and apply the pending knob."""
        source = self.volume_file(snapshot.volume.id)
        if source.exists():
            devices.copy_sparse(source, self.snapshot_file(snapshot.id))
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if now <= self._last_start:
            now = self._last_start + timedelta(milliseconds=1)
        self._last_start = now
        snapshot.start_time = now
        seconds = self.faults.snapshot_pending_seconds
        if seconds > 0:
            snapshot.__class__ = _LabSnapshot
            snapshot.lab_started_at = time.monotonic()
            snapshot.lab_done_at = snapshot.lab_started_at + seconds

    def _with_start_times(self, answer: Answer) -> Answer:
        """Write each snapshot's millisecond start time over moto's `.000Z` one."""
        status, headers, payload = answer
        if not status.startswith("200"):
            return answer
        ids = re.findall(rb"<snapshotId>(snap-[0-9a-f]+)</snapshotId>", payload)
        times = list(re.finditer(rb"<startTime>[^<]*</startTime>", payload))
        if len(ids) != len(times):
            return answer
        pieces = []
        last = 0
        for snapshot_id, match in zip(ids, times):
            snapshot = self.backend.snapshots.get(snapshot_id.decode())
            if snapshot is None:
                continue
            pieces.append(payload[last : match.start()])
            pieces.append(f"<startTime>{_iso_ms(snapshot.start_time)}</startTime>".encode())
            last = match.end()
        pieces.append(payload[last:])
        return status, headers, b"".join(pieces)


class _Refused(Exception):
    def __init__(self, answer: Answer) -> None:
        super().__init__(answer[0])
        self.answer = answer


def _disconnected(client: socket.socket) -> bool:
    """True when the peer closed the connection (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([client], [], [], 0)
        return bool(readable) and client.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _first(pattern: bytes, payload: bytes) -> str:
    found = re.search(pattern, payload)
    if found is None:
        raise RuntimeError(f"moto's answer has no match for {pattern!r}")
    return found.group(1).decode()
