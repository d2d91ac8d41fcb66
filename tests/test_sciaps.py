"""The SciAps driver against the simulated analyser (real HTTP on loopback), and lot assays
measured on it: stored, audited, in the purity report and the mass balance."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from hydromet_feed import add_lot
from sqlalchemy import select

from drivers.sciaps import SciapsClient, SciapsError, parse_test_result
from drivers.sim.cells import CellFormat, CellTruth
from drivers.sim.sciaps import Pellet, SimSciaps, black_mass_pellet
from plant.commands.bench_harness import free_port_block
from plant.config import AssayAnalyserSection, ConfigError, load_plant
from plant.domain import Chemistry
from plant.hydromet import HydrometConfig, load_hydromet
from plant.lot_assays import LotAssayError, assay_lot
from plant.purity import load_products
from plant.purity_report import build_report
from plant.spot_checks import chemistry_of
from plant.store import (
    AssayRow,
    AuditRow,
    CampaignLotRow,
    CampaignRow,
    LotRow,
    Store,
    upgrade,
)

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
BEAMS = [0.3, 0.3]
NOT_MATERIALS = (Chemistry.NMC, Chemistry.UNKNOWN)


def cells(chemistry: str, n: int, fmt: CellFormat = CellFormat.pouch) -> list[CellTruth]:
    return [CellTruth.bare(chemistry, fmt, seq=i) for i in range(n)]


def pellet(chemistry: str, n: int = 10) -> Pellet:
    p = black_mass_pellet(f"{chemistry} x{n}", cells(chemistry, n))
    assert p is not None
    return p


@contextlib.asynccontextmanager
async def analyser(
    press: Callable[[str, str], Pellet | None] | None = None,
) -> AsyncIterator[SimSciaps]:
    """The simulated analyser on a free loopback port."""
    sim = SimSciaps(port=0, press=press)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def client(sim: SimSciaps, **kw: float) -> SciapsClient:
    return SciapsClient("127.0.0.1", sim.port, timeout_s=kw.get("timeout_s", 5.0))


def test_identify_status_and_energy_calibration() -> None:
    async def main() -> None:
        async with analyser() as sim:
            async with client(sim) as c:
                ident = await c.identify()
                status = await c.status()
                ecal = await c.energy_calibration()
                await c.calibrate_energy()
                after = await c.status()
            assert ident.family == "XRF" and "Mining" in ident.apps and ident.id == sim.serial
            assert status.not_ready() is None and status.energy_calibration_needed
            assert not after.energy_calibration_needed and sim.ecal_runs == 1
            assert 15 < ecal.slope_ev < 25

    asyncio.run(main())


def test_measures_the_pellet_in_the_cup_not_what_it_is_told() -> None:
    async def main() -> None:
        async with analyser() as sim:
            nmc, lfp = pellet("NMC811"), pellet("LFP")
            async with client(sim) as c:
                sim.place(nmc)
                a = await c.test("Mining", BEAMS)
                sim.place(lfp)
                b = await c.test("Mining", BEAMS)
            # NMC811 black mass: Ni-rich, no Fe or P; the pellet's truth within the analyser's
            # uncertainty and its calibration bias (a few % relative).
            ni = a.wt_pct()["Ni"]
            assert abs(ni - nmc.wt_pct["Ni"]) <= 4 * a.unc_pct()["Ni"] + 0.06 * nmc.wt_pct["Ni"]
            assert "Fe" in a.below_lod() and "P" in a.below_lod()
            assert b.wt_pct()["Fe"] > 10 and b.wt_pct()["P"] > 5 and "Ni" in b.below_lod()
            assert a.duration_s == pytest.approx(sum(BEAMS) + 0.3, abs=0.05)

    asyncio.run(main())


def test_a_longer_test_is_more_precise() -> None:
    async def main() -> None:
        async with analyser() as sim:
            sim.place(pellet("NMC622"))
            async with client(sim) as c:
                short = await c.test("Mining", [0.2])
                long = await c.test("Mining", [1.8])
            assert long.unc_pct()["Ni"] == pytest.approx(short.unc_pct()["Ni"] / 3, rel=0.05)

    asyncio.run(main())


def test_an_empty_cup_fails_with_the_analysers_low_count_rate_code() -> None:
    async def main() -> None:
        async with analyser() as sim, client(sim) as c:
            with pytest.raises(SciapsError, match=r"code 105: count rate too low"):
                await c.test("Mining", BEAMS)

    asyncio.run(main())


def test_one_test_at_a_time_and_abort() -> None:
    async def main() -> None:
        async with analyser() as sim:
            sim.place(pellet("NMC532"))
            async with client(sim) as c, client(sim) as other:
                first = asyncio.create_task(c.test("Mining", [3.0]))
                await asyncio.sleep(0.3)
                with pytest.raises(SciapsError, match="code 401: too many requests"):
                    await other.test("Mining", [0.2])
                await other.abort()
                with pytest.raises(SciapsError, match="aborted by the user"):
                    await first

    asyncio.run(main())


def test_unknown_mode_is_an_http_error_naming_it() -> None:
    async def main() -> None:
        async with analyser() as sim, client(sim) as c:
            with pytest.raises(
                SciapsError, match=r"POST /api/v2/test/final: HTTP 400: .*'BlackMass'"
            ):
                await c.test("BlackMass", BEAMS)

    asyncio.run(main())


def test_no_analyser_is_one_line_after_the_retries() -> None:
    async def main() -> None:
        port = free_port_block(1)  # nobody listens there
        c = SciapsClient("127.0.0.1", port, timeout_s=1.0, retries=2, backoff_s=0.01)
        with pytest.raises(SciapsError) as exc:
            await c.identify()
        await c.close()
        msg = str(exc.value)
        assert f"127.0.0.1:{port}: GET /api/v2/id: cannot connect" in msg
        assert msg.endswith("after 3 attempts") and "\n" not in msg

    asyncio.run(main())


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ([], "not a JSON object"),
        ({"status": 0, "errorCode": 0}, "no testData"),
        ({"status": 102, "errorCode": 102}, "code 102: detector temperature"),
        ({"status": 0, "errorCode": 0, "testData": {"chemistry": 3}}, "no chemistry list"),
        (
            {"status": 0, "testData": {"timestamp": 1, "durationMs": 1, "chemistry": [
                {"atomicNumber": 999, "percent": 1.0, "uncertainty": 0.1, "flags": 0}]}},
            "atomicNumber 999 is not an element",
        ),
        (
            {"status": 0, "testData": {"timestamp": 1, "durationMs": 1, "chemistry": [
                {"atomicNumber": 28, "percent": "NaN", "uncertainty": 0.1, "flags": 0}]}},
            "field 'percent' is 'NaN'",
        ),
    ],
)  # fmt: skip
def test_malformed_or_failed_test_replies_are_named(reply: object, error: str) -> None:
    with pytest.raises(SciapsError, match=error):
        parse_test_result(reply)


def test_light_element_balance_and_nominal_values_are_not_measurements() -> None:
    reply = {
        "status": 0,
        "errorCode": 0,
        "testData": {
            "mode": "Mining",
            "timestamp": 1_740_808_800_000,
            "durationMs": 20_000,
            "chemistry": [
                {"atomicNumber": 28, "percent": 18.0, "uncertainty": 0.3, "flags": 0},
                {"atomicNumber": 12, "percent": 60.0, "uncertainty": 1.0, "flags": 32},
                {"atomicNumber": 26, "percent": 0.02, "uncertainty": 0.01, "flags": 8},
            ],
        },
    }
    r = parse_test_result(reply)
    assert r.wt_pct() == {"Ni": 18.0} and r.below_lod() == {"Fe": 0.02}
    assert r.taken_at == datetime(2025, 3, 1, 6, 0, tzinfo=UTC)


def test_analyser_settings_are_checked_at_load(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "plant.toml").write_text('[assay_analyser]\nkind = "sciaps"\nbeam_times_s = [0]\n')
    with pytest.raises(ConfigError, match=r"assay_analyser.beam_times_s: .*must be > 0"):
        load_plant(cfg)
    (cfg / "plant.toml").write_text('[assay_analyser]\nkind = "niton"\n')
    with pytest.raises(ConfigError, match=r"assay_analyser.kind: .*'niton'"):
        load_plant(cfg)


def test_a_measured_lot_is_stored_audited_reported_and_balanced(store: Store) -> None:
    """The line estimated NMC811; the black mass in the cup is LFP's: the report and the
    balance follow the measurement."""

    async def main() -> None:
        add_lot(store, "L1-HM-1", [("NMC811", 200.0)] * 50, closed_at=T0, seq0=1)
        with store.begin() as s:
            feed = {"Ni": 1690.5, "Co": 213.5, "Li": 248.5}  # the lot's estimate
            s.add(CampaignRow(id="L1-HC00001", line="L1", started_at=T0, ph_mean=4.0, ph_sd=0.05,
                              feed_g=feed, residues_g={}))  # fmt: skip
            s.flush()
            s.add(CampaignLotRow(campaign_id="L1-HC00001", lot_id="L1-HM-1"))
        truth = {"L1-HM-1": cells("LFP", 50)}
        sim = SimSciaps(port=0, press=lambda _, lot: black_mass_pellet(lot, truth[lot]))
        await sim.start()
        analyser = AssayAnalyserSection(port=sim.port, beam_times_s=BEAMS)
        products, hydromet = load_products(REPO / "config"), load_hydromet(REPO / "config")

        def valuation() -> HydrometConfig:
            return hydromet

        try:
            before = build_report(store, products, hydromet)["mass_balance"]["Ni"]["in_g"]
            with pytest.raises(LotAssayError, match="code 105"):  # nothing in the cup yet
                await assay_lot(store, analyser, valuation, "L1-HM-1", "eng", black_mass_kg=5.5)
            async with httpx.AsyncClient() as http:  # the technician presses the pellet
                r = await http.put(
                    f"http://127.0.0.1:{sim.port}/sim/sample", json={"lot_id": "L1-HM-1"}
                )
            assert r.status_code == 200
            got = await assay_lot(store, analyser, valuation, "L1-HM-1", "eng", black_mass_kg=5.5)
        finally:
            await sim.stop()
        assert got["wt_pct"]["Fe"] > 10 and "Ni" in got["below_lod_pct"]
        rep = build_report(store, products, hydromet)
        lot = next(x for x in rep["lots"] if x["id"] == "L1-HM-1")
        assert lot["assay"]["source"] == "analyser" and lot["assay"]["wt_pct"] == got["wt_pct"]
        assert lot["value"] is not None and lot["assay"]["black_mass_kg"] == 5.5
        # The measured Ni (none) replaces the estimate's 1690 g in the feed of the campaign.
        assert before == pytest.approx(1690.5)
        assert rep["mass_balance"]["Ni"]["in_g"] == pytest.approx(0.0, abs=1.0)
        with store.session() as s:
            audit = s.scalars(select(AuditRow).where(AuditRow.action == "lot.assay")).one()
            row = s.scalars(select(AssayRow).where(AssayRow.source == "analyser")).one()
        assert (audit.user, audit.target) == ("eng", "lot:L1-HM-1")
        assert f"assay {row.id}: " in (audit.new or "") and "Fe" in (audit.new or "")
        assert json.loads(json.dumps(row.composition))["instrument"].endswith(sim.serial)

    asyncio.run(main())


def test_lots_that_cannot_be_assayed_are_refused(store: Store) -> None:
    async def main() -> None:
        add_lot(store, "L1-RJ-1", [("NiMH", 100.0)], route="reject", closed_at=T0, seq0=1)

        def hydromet() -> HydrometConfig:
            return load_hydromet(REPO / "config")

        analyser = AssayAnalyserSection(port=1, beam_times_s=BEAMS)
        with pytest.raises(LotAssayError, match="no lot 'NOPE'"):
            await assay_lot(store, analyser, hydromet, "NOPE", "eng")
        with pytest.raises(LotAssayError, match="reject lot, not black mass"):
            await assay_lot(store, analyser, hydromet, "L1-RJ-1", "eng")
        with store.begin() as s:
            s.add(LotRow(id="L1-BM-0", line="L1", route="black_mass", state="open", opened_at=T0))
        with pytest.raises(LotAssayError, match="L1-BM-0 is still open"):
            await assay_lot(store, analyser, hydromet, "L1-BM-0", "eng")
        none = AssayAnalyserSection(kind="none")
        add_lot(store, "L1-BM-2", [("LFP", 100.0)], route="black_mass", closed_at=T0, seq0=9)
        with pytest.raises(LotAssayError, match='kind = "none"'):
            await assay_lot(store, none, hydromet, "L1-BM-2", "eng")

    asyncio.run(main())


def test_an_analyser_asking_for_energy_calibration_gets_one_and_a_warm_one_is_refused(
    sqlite_url: str,
) -> None:
    upgrade(sqlite_url)
    store = Store(sqlite_url)
    add_lot(store, "L1-BM-1", [("LFP", 100.0)] * 20, route="black_mass", closed_at=T0, seq0=1)

    def hydromet() -> HydrometConfig:
        return load_hydromet(REPO / "config")

    async def main() -> None:
        async with analyser() as sim:
            cfg = AssayAnalyserSection(port=sim.port, beam_times_s=BEAMS)
            sim.place(pellet("LFP"))
            first = await assay_lot(store, cfg, hydromet, "L1-BM-1", "eng")
            second = await assay_lot(store, cfg, hydromet, "L1-BM-1", "eng")
            assert sim.ecal_runs == 1  # once, when the analyser asked for it
            assert first["energy_calibrated_first"] and not second["energy_calibrated_first"]
            sim.detector_temp_c = 4.0
            with pytest.raises(LotAssayError, match=r"detector at 4.0 °C, not cooled"):
                await assay_lot(store, cfg, hydromet, "L1-BM-1", "eng")
            assert sim.tests == 2

    try:
        asyncio.run(main())
    finally:
        store.close()


@pytest.mark.parametrize("chemistry", [c.value for c in Chemistry if c not in NOT_MATERIALS])
def test_a_spot_check_names_the_chemistry_of_a_cells_sample(chemistry: str) -> None:
    async def main() -> None:
        async with analyser() as sim, client(sim) as c:
            sim.place(pellet(chemistry, 1))
            got = await c.test("Mining", [2.0])
        assert chemistry_of(got.wt_pct())[0] == chemistry, got.wt_pct()

    asyncio.run(main())


def test_a_sample_without_cathode_metals_is_unknown() -> None:
    chem, why = chemistry_of({"Al": 3.0, "Cu": 2.0, "Fe": 0.2})
    assert chem == Chemistry.UNKNOWN and "no cathode" in why
