"""Typed result of the ownership-transfer calls (OfferOwnershipTransfer,
GetOwnershipTransfer)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from luman.organization.v1 import organization_pb2


@dataclasses.dataclass(frozen=True)
class OwnershipTransfer:
    """An owner's pending offer to make another member an owner, until `expire_time`."""

    organization_id: str
    from_user_id: str
    to_user_id: str
    to_email: str
    create_time: dt.datetime | None
    expire_time: dt.datetime | None

    @classmethod
    def from_proto(cls, transfer: organization_pb2.OwnershipTransfer) -> OwnershipTransfer:
        return cls(
            organization_id=transfer.organization_id,
            from_user_id=transfer.from_user_id,
            to_user_id=transfer.to_user_id,
            to_email=transfer.to_email,
            create_time=(
                transfer.create_time.ToDatetime(tzinfo=dt.UTC)
                if transfer.HasField("create_time")
                else None
            ),
            expire_time=(
                transfer.expire_time.ToDatetime(tzinfo=dt.UTC)
                if transfer.HasField("expire_time")
                else None
            ),
        )
