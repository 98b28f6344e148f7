"""A client of the gateway's Consults service for staff tools (the CLI, the demo tour).

It presents a person certificate (or a node certificate plus ``practitioner``). Reports
are signed here, on the specialist's side, with the key of their person certificate —
the gateway never holds it. Studies download into a file a chunk at a time, each chunk
checked against the manifest, resuming a partial download from its last good chunk.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from federation._proto.v1 import consult_pb2 as pb
from federation._proto.v1 import consult_pb2_grpc, referral_pb2
from federation.consult.report import diagnostic_report, sign_report
from federation.consult.service import NewConsult
from federation.consult.studies import Chunk, Download, download
from federation.consult.wire import (
    ConsultDetail,
    ConsultSummary,
    consult_from_proto,
    decode_chunk,
    detail_from_proto,
)
from federation.errors import NotFound
from federation.rpc.channels import secure_channel
from federation.rpc.status import error_from_rpc
from federation.rpc.wire import timestamp
from federation.security.ca import GATEWAY_SERVER_NAME
from federation.security.identity import identity_from_pem
from federation.security.signing import Signer
from federation.security.tls import TlsMaterial

__all__ = ["ConsultClient"]

_FETCH = "/federation.v1.Consults/FetchStudy"


class ConsultClient:
    def __init__(self, address: str, tls: TlsMaterial, *,
                 practitioner: tuple[str, str] | None = None, timeout: float = 30.0) -> None:
        self._address = address
        self._tls = tls
        self._channel = secure_channel(address, tls, 16 << 20, server_name=GATEWAY_SERVER_NAME)
        self._stub = consult_pb2_grpc.ConsultsStub(self._channel)
        self._practitioner = (referral_pb2.Practitioner(user_id=practitioner[0],
                                                        role=practitioner[1])
                              if practitioner else None)
        self._timeout = timeout

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, f"gateway {self._address}") from None

    async def request(self, new: NewConsult) -> tuple[ConsultSummary, bool]:
        reply = await self._call("Request", pb.ConsultRequest(
            practitioner=self._practitioner, request_id=new.request_id or "",
            patient_id=new.patient_id, kind=new.kind, mode=new.mode, urgency=new.urgency,
            pool=new.pool or "", question=new.question,
            reason=referral_pb2.Coding(**{k: v for k, v in new.reason.items()
                                          if k in ("system", "code", "display", "text")}),
            study_ids=list(new.study_ids), consent=new.consent_method or ""))
        return consult_from_proto(reply.consult), reply.created

    async def act(self, consult_id: str, action: str, *, note: str = "", to_user: str = "",
                  slot_start: dt.datetime | None = None, participants: Sequence[str] = (),
                  expected_version: int | None = None) -> ConsultSummary:
        reply = await self._call("Act", pb.ConsultActRequest(
            practitioner=self._practitioner, consult_id=consult_id, action=action,
            expected_version=expected_version or 0, note=note, to_user=to_user,
            slot_start=timestamp(slot_start), participants=list(participants)))
        return consult_from_proto(reply.consult)

    async def send_report(self, consult_id: str, report: dict[str, Any], signature: bytes,
                          cert_pem: bytes, *, amend: bool = False) -> ConsultSummary:
        reply = await self._call("Report", pb.ConsultReportRequest(
            practitioner=self._practitioner, consult_id=consult_id, amend=amend,
            report_json=json.dumps(report, ensure_ascii=False).encode(), signature=signature,
            signer_cert_pem=cert_pem))
        return consult_from_proto(reply.consult)

    async def report(self, consult_id: str, conclusion: str,
                     codes: Sequence[dict[str, str]] = (), *, amend: bool = False,
                     signer: Signer | None = None) -> ConsultSummary:
        """Build the next version of the consult's report, sign it with ``signer`` (by
        default this client's own person certificate) and send it."""
        detail = await self.get(consult_id)
        c = detail.consult
        n = sum(1 for name in detail.resources if name.startswith("Report.v")) + 1
        signer = signer or Signer(self._tls.cert_pem, self._tls.key_pem)
        if self._practitioner is not None:
            site, user = c.hub_site, self._practitioner.user_id
        else:
            me = identity_from_pem(self._tls.cert_pem)
            site, user = me.site_id or "", me.name
        report = diagnostic_report(
            consult_id, n, kind=c.kind, conclusion=conclusion, codes=codes,
            author_site=site, author_user=user,
            subject=detail.consult.task["for"], issued=dt.datetime.now(dt.UTC),
            replaces=f"{consult_id}-r{n - 1}" if n > 1 else None)
        signed = sign_report(report, signer)
        return await self.send_report(consult_id, signed.report, signed.signature,
                                      signed.cert_pem, amend=amend)

    async def get(self, consult_id: str) -> ConsultDetail:
        return detail_from_proto(await self._call("Get", pb.GetConsultRequest(
            practitioner=self._practitioner, consult_id=consult_id)))

    async def inbox(self, *, status: Sequence[str] = (), mine: bool = False, offset: int = 0,
                    limit: int = 20) -> tuple[list[ConsultSummary], int]:
        reply = await self._call("Inbox", pb.ConsultInboxRequest(
            practitioner=self._practitioner, status=list(status), mine=mine, offset=offset,
            limit=limit))
        return [consult_from_proto(c) for c in reply.consults], reply.total

    def stream(self, consult_id: str, study_id: str, name: str, *,
               interrupt_after: int | None = None) -> Callable[[int], AsyncIterator[Chunk]]:
        """The chunk source :func:`download` reads; ``interrupt_after`` chunks cut the
        stream (drills and tests of resuming)."""
        where = f"gateway {self._address}"

        async def chunks(offset: int) -> AsyncIterator[Chunk]:
            # replies as bytes: the chunk's data is hashed and written where gRPC put it
            call = self._channel.unary_stream(
                _FETCH, request_serializer=pb.FetchStudyRequest.SerializeToString,
                response_deserializer=None)(pb.FetchStudyRequest(
                    practitioner=self._practitioner, consult_id=consult_id,
                    study_id=study_id, object=name, offset=offset))
            n = 0
            try:
                async for raw in call:
                    if interrupt_after is not None and n >= interrupt_after:
                        raise ConnectionError(f"stream cut after {n} chunks")
                    yield decode_chunk(raw, where)
                    n += 1
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc, f"gateway {self._address}") from None
            finally:
                call.cancel()
        return chunks

    async def fetch_study(self, consult_id: str, study_id: str, out_dir: Path, *,
                          objects: Sequence[str] = (), interrupt_after: int | None = None
                          ) -> list[Download]:
        """Download the study's objects (all, or those named) into ``out_dir/<study>/``."""
        detail = await self.get(consult_id)
        manifest = next((m for m in detail.studies if m.study_id == study_id), None)
        if manifest is None:
            raise NotFound(f"consult {consult_id} names no study '{study_id}'")
        done = []
        for obj in manifest.objects:
            if objects and obj.name not in objects:
                continue
            done.append(await download(
                obj, Path(out_dir) / study_id / obj.name,
                self.stream(consult_id, study_id, obj.name, interrupt_after=interrupt_after),
                where=f"gateway {self._address}"))
        return done

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> ConsultClient:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
