"""`/api/weighings`: an engineer records a weighed fraction of the mechanical stage (audited)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import Field

from hmi.api import AUTH, ApiIn, Ctx, Engineer, errors
from plant.weighings import FRACTIONS, WeighingError, record_weighing

router = APIRouter(prefix="/api")


class WeighingIn(ApiIn):
    fraction: str = Field(
        min_length=1, max_length=32, description=f"one of: {', '.join(FRACTIONS)}"
    )
    kg: float = Field(description="weighed mass, kg (above 0, at most 100,000)")
    lot: str | None = Field(None, min_length=1, max_length=64, description="closed lot id")
    at: datetime | None = Field(None, description="when weighed (UTC without a zone); default now")


@router.post("/weighings", status_code=201, responses=errors(*AUTH, 400, 422))
def add_weighing(body: WeighingIn, who: Engineer, c: Ctx) -> dict[str, Any]:
    """Record a weighed fraction (engineer; audited); it counts in the EU recycling efficiency at
    its calculation point (docs/purity.md)."""
    try:
        return record_weighing(
            c.store, body.fraction, body.kg, user=who.user.name, source="engineer",
            lot=body.lot, at=body.at,
        )  # fmt: skip
    except WeighingError as exc:
        raise HTTPException(422, str(exc)) from None
