"""The operator's console end to end, as an operator uses it, with nothing mocked.

One `ccdflow server` (PostgreSQL, Prefect server, the deployments of deploy/prefect.yaml
and a process worker) runs for the whole module against a `ccdflow sim` simulator,
with the instrument picked by name from an instruments folder of our own. Runs are
triggered the ways an operator can: the REST API, a schedule and the UI's form in
Debian's chromium (Playwright). Each run must really expose: the FITS files it
writes are read back. The last test stops the console with SIGTERM and checks that
nothing it started is left.

The module skips (with the reason) without PostgreSQL; the browser tests skip without
/usr/bin/chromium. A failing browser test leaves a screenshot and the page's HTML in
test-artifacts/browser/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest

from .console_harness import (
    CCDFLOW,
    CHROMIUM,
    CLEAN_STOP_S,
    REPO,
    Api,
    Console,
    chromium_missing,
    describe,
    fits_files,
    iso_in,
    make_root,
    new_fits,
    owned_processes,
    postgres_missing,
    postgres_processes,
    primary_header,
    start_console,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

_NO_POSTGRES = postgres_missing()
_NO_CHROMIUM = chromium_missing()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_NO_POSTGRES is not None, reason=f"console tests: {_NO_POSTGRES}"),
]
needs_chromium = pytest.mark.skipif(
    _NO_CHROMIUM is not None, reason=f"browser tests: {_NO_CHROMIUM}"
)

TAKE_EXPOSURE = "take-exposure/take-exposure"
RUN_TIMEOUT_S = 120.0
"""A 1 s dark takes 3-10 s from trigger to Completed here (the worker starts a process)."""
HISTORY_TIMEOUT_S = 30.0
UI_TIMEOUT_MS = 30_000
EVIDENCE = REPO / "test-artifacts" / "browser"


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def console() -> Iterator[Console]:
    """The whole console, started once (25-45 s). The last test stops it and checks
    the stop; this teardown only makes sure it is stopped and its folder removed."""
    root = make_root()
    try:
        running = start_console(root)
        try:
            yield running
        finally:
            running.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def api(console: Console) -> Iterator[Api]:
    client = Api(console.api_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def deployment(api: Api) -> dict[str, Any]:
    """take-exposure as `prefect deploy` created it at the console's start."""
    return api.deployment(TAKE_EXPOSURE)


@dataclass(frozen=True)
class FinishedRun:
    """A run the tests triggered and waited for, with what it wrote."""

    run: dict[str, Any]
    files: list[Path]
    to_running_s: float | None
    to_completed_s: float


def _operator_runs(api: Api, deployment_id: str) -> set[str]:
    """Ids of the deployment's runs that were not created by a schedule (a schedule
    deleted by another test may still add a run: the scheduler races the delete)."""
    return {run["id"] for run in api.runs_of(deployment_id) if not run["auto_scheduled"]}


def _table_files(api: Api, run_id: str) -> list[str]:
    """The file names the run's exposure table (tasks/reporting/artifacts.py) lists."""
    tables = [a for a in api.artifacts_of(run_id) if a["type"] == "table"]
    assert tables, f"run {run_id} published no exposure table: {api.artifacts_of(run_id)}"
    rows = json.loads(tables[0]["data"])
    return sorted(name.strip() for row in rows for name in str(row["files"]).split(","))


def _wait_completed(
    api: Api, console: Console, run_id: str, seen: dict[str, float] | None = None
) -> dict[str, Any]:
    run = api.wait_for_state(run_id, ["COMPLETED"], RUN_TIMEOUT_S, seen=seen)
    state = run["state"]
    assert state["type"] == "COMPLETED", (
        f"run {run_id} ended {state['type']}: {state.get('message')}\n{console.server_logs()}"
    )
    return run


def _written_by(api: Api, console: Console, run_id: str, before: dict[Path, float]) -> list[Path]:
    """The FITS files that appeared since ``before``, checked against the run's table."""
    files = new_fits(console.data, before)
    assert sorted(path.name for path in files) == _table_files(api, run_id), (
        f"new files {files} are not the ones run {run_id} reports"
    )
    return files


def _check_headers(files: list[Path], image_type: str, exptime: float) -> None:
    """Every file of the exposure says what was asked (tasks/headers/header.py writes IMAGETYP
    as the ImageType value, lowercase; tasks/headers/time_cards.py writes EXPTIME)."""
    assert files, "the run wrote no FITS file"
    for path in files:
        header = primary_header(path)
        assert header.get("IMAGETYP") == image_type, (path, header.get("IMAGETYP"))
        assert header.get("EXPTIME") == pytest.approx(exptime), (path, header.get("EXPTIME"))


@pytest.fixture(scope="module")
def dark_run(api: Api, console: Console, deployment: dict[str, Any]) -> FinishedRun:
    """A 1 s dark created through the REST API, as a script or another system would,
    waited for until Completed; timed from the request to Running and to Completed."""
    before = fits_files(console.data)
    seen: dict[str, float] = {}
    began = time.monotonic()
    response = api.create_run(deployment["id"], {"spec": {"image_type": "dark", "exptime": 1}})
    assert response.status_code == 201, response.text
    run = _wait_completed(api, console, response.json()["id"], seen)
    running = seen.get("RUNNING")
    return FinishedRun(
        run=run,
        files=_written_by(api, console, run["id"], before),
        to_running_s=None if running is None else running - began,
        to_completed_s=seen["COMPLETED"] - began,
    )


# -- through the API ----------------------------------------------------------------------


def test_the_console_offers_our_instrument_by_name(
    console: Console, deployment: dict[str, Any]
) -> None:
    """The console's instruments folder is the one the runs use: our sim.yaml loads
    (pointed at our simulator) and the deployment's form lists it by name."""
    from flows.instrument_choice import FOLDER_VARIABLE, resolve_instrument

    with mock.patch.dict(os.environ, {FOLDER_VARIABLE: str(console.instruments)}):
        config = resolve_instrument("sim")
    assert config.controllers[0].port == console.sim.port
    assert Path(config.storage.data_root) == console.data
    schema = deployment["parameter_openapi_schema"]["properties"]["instrument"]
    names = [choice.get("enum") for choice in schema["anyOf"] if "enum" in choice]
    assert names == [["sim"]], schema
    assert deployment["parameters"]["instrument"] == "sim"


def test_a_run_created_through_the_api_writes_the_dark(dark_run: FinishedRun) -> None:
    """The deployment, the worker, the instrument picked by name and the simulator work
    together: the run completes and its files hold the dark that was asked for."""
    assert dark_run.run["parameters"]["instrument"] == "sim"
    assert len(dark_run.files) == 2, dark_run.files  # sim: two CCDs, one file each
    _check_headers(dark_run.files, "dark", 1.0)
    running = "not seen" if dark_run.to_running_s is None else f"{dark_run.to_running_s:.1f} s"
    print(f"\nAPI trigger -> Running {running}, -> Completed {dark_run.to_completed_s:.1f} s")


def test_the_api_refuses_a_negative_exposure_time(
    api: Api, console: Console, deployment: dict[str, Any]
) -> None:
    """A bad value is refused before a run exists, so no hardware moves: the server
    checks the parameters against the schema `prefect deploy` stored."""
    runs_before = _operator_runs(api, deployment["id"])
    files_before = fits_files(console.data)
    response = api.create_run(deployment["id"], {"spec": {"image_type": "dark", "exptime": -5}})
    assert response.status_code in (409, 422), response.text
    assert "exptime" in response.json()["detail"], response.text
    assert _operator_runs(api, deployment["id"]) == runs_before
    assert fits_files(console.data) == files_before


def _history(console: Console) -> tuple[list[dict[str, Any]], float]:
    """`ccdflow history --json` from the console's folder without PREFECT_API_URL: it
    must find the running server through state/server/api.json."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    began = time.monotonic()
    done = subprocess.run(
        [str(CCDFLOW), "history", "--json", "--limit", "50"],
        cwd=console.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=HISTORY_TIMEOUT_S,
        check=False,
    )
    took = time.monotonic() - began
    assert done.returncode == 0, done.stdout + done.stderr
    runs: list[dict[str, Any]] = json.loads(done.stdout)
    return runs, took


@pytest.fixture(scope="module")
def history(console: Console, dark_run: FinishedRun) -> list[dict[str, Any]]:
    runs, took = _history(console)
    print(f"\nccdflow history --json took {took:.1f} s")
    return runs


def test_history_lists_the_run_from_the_running_console(
    history: list[dict[str, Any]], dark_run: FinishedRun
) -> None:
    """An operator in the console's folder sees the run with what it wrote (an embedded
    API of its own would have no runs at all)."""
    listed = {run["id"]: run for run in history}
    run = listed.get(dark_run.run["id"])
    assert run is not None, f"run {dark_run.run['id']} not in {list(listed)}"
    assert run["flow"] == "take-exposure"
    assert run["state_type"] == "COMPLETED"
    assert run["parameters"]["planned"] == {"dark": 1}
    assert (run["exposures"], run["files"]) == (1, len(dark_run.files))


def test_history_names_the_instrument_picked_by_name(
    history: list[dict[str, Any]], dark_run: FinishedRun
) -> None:
    """The `inst` column of `ccdflow history` says which instrument a run drove, also
    when the run named a configured instrument (what every deployment passes)."""
    run = {run["id"]: run for run in history}[dark_run.run["id"]]
    assert run["parameters"]["instrument"] == "sim", run["parameters"]


def test_a_schedule_creates_a_run_the_worker_completes(
    api: Api, console: Console, deployment: dict[str, Any]
) -> None:
    """The server's scheduler creates the run (on PostgreSQL) and the worker runs it with
    the schedule's parameters; deleting the schedule leaves the deployment without one."""
    dep = deployment["id"]
    auto_before = {run["id"] for run in api.runs_of(dep) if run["auto_scheduled"]}
    files_before = fits_files(console.data)
    body = [
        {
            "schedule": {"interval": 3600, "anchor_date": iso_in(5)},
            "active": True,
            "parameters": {"spec": {"image_type": "bias"}},
        }
    ]
    response = api.client.post(f"/deployments/{dep}/schedules", json=body)
    assert response.status_code == 201, response.text
    schedule_id = response.json()[0]["id"]
    try:
        deadline = time.monotonic() + 60
        created: list[dict[str, Any]] = []
        while not created:
            assert time.monotonic() < deadline, "the scheduler created no run within 60 s"
            time.sleep(0.5)
            created = [
                run
                for run in api.runs_of(dep)
                if run["auto_scheduled"] and run["id"] not in auto_before
            ]
        first = min(created, key=lambda run: str(run["expected_start_time"]))
        assert first["parameters"]["spec"] == {"image_type": "bias"}
        run = _wait_completed(api, console, first["id"])
        _check_headers(_written_by(api, console, run["id"], files_before), "bias", 0.0)
    finally:
        deleted = api.client.delete(f"/deployments/{dep}/schedules/{schedule_id}")
    assert deleted.status_code == 204, deleted.text
    assert api.get(f"/deployments/{dep}/schedules") == []


# -- in the browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(console: Console) -> Iterator[Browser]:
    """One chromium for the module (Debian's; `playwright install` would download)."""
    if _NO_CHROMIUM is not None:
        pytest.skip(f"browser tests: {_NO_CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)  # a busy 2-CPU host renders slowly
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page; when the test fails, its screenshot and HTML are kept.

    A fixture never sees its test's exception, but pytest has counted the failure
    (the call's report is logged) before the fixture's teardown runs."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    opened = context.new_page()
    failed_before = request.session.testsfailed
    try:
        yield opened
        if request.session.testsfailed > failed_before:
            _keep_evidence(opened, request.node.name)
    finally:
        context.close()


def _keep_evidence(page: Page, name: str) -> None:
    """Save what the browser showed (screenshot and HTML) under test-artifacts/browser."""
    EVIDENCE.mkdir(parents=True, exist_ok=True)
    stem = EVIDENCE / re.sub(r"[^\w.-]+", "_", name)
    try:
        page.screenshot(path=str(stem.with_suffix(".png")), full_page=True)
        stem.with_suffix(".html").write_text(page.content(), encoding="utf-8")
    except Exception as exc:  # the page may be gone; the test's own error matters more
        print(f"\ncould not keep browser evidence of {name}: {exc}")
        return
    print(f"\nbrowser evidence: {stem}.png (and .html), page {page.url}")


def _form_field(page: Page, label: str) -> Locator:
    """A property of Prefect's schema form by its title. The UI's <label for> points at
    no input, so get_by_label finds nothing: go from the title to its p-label block."""
    return page.locator(
        "xpath=//span[contains(@class,'schema-form-property__label')"
        f" and (normalize-space()='{label}' or normalize-space()='{label} (Optional)')]"
        "/ancestor::div[contains(concat(' ',@class,' '),' p-label ')][1]"
    )


def _choose(page: Page, field: Locator, option: str) -> None:
    """Pick an option of a Prefect select. A click on the select does not open it in
    headless chromium; the keyboard (ArrowDown) does, as for an operator."""
    from playwright.sync_api import expect

    control = field.locator("button.p-select-button__control").first
    control.press("ArrowDown")
    page.get_by_role("option", name=option, exact=True).click()
    expect(control).to_have_text(option)


def _open_custom_run(page: Page, console: Console, deployment: dict[str, Any]) -> None:
    """Deployments -> take-exposure -> Run -> Custom run, as an operator clicks."""
    from playwright.sync_api import expect

    page.goto(f"{console.ui_url}/deployments")
    page.get_by_role("link", name="take-exposure", exact=True).first.click()
    page.wait_for_url(f"**/deployments/deployment/{deployment['id']}*")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("button", name="Custom run").click()
    page.wait_for_url(f"**/deployments/deployment/{deployment['id']}/run*")
    expect(_form_field(page, "Image type")).to_be_visible()


def _submit(page: Page) -> Any:
    """Press Submit; the API's answer to the form's create_flow_run request."""
    with page.expect_response(
        lambda r: r.url.endswith("/create_flow_run") and r.request.method == "POST"
    ) as answer:
        page.get_by_role("button", name="Submit", exact=True).click()
    return answer.value


@needs_chromium
def test_the_form_takes_a_dark(
    page: Page, api: Api, console: Console, deployment: dict[str, Any]
) -> None:
    """The operator's main path: the form lists the spec's fields in the model's order
    and offers the configured instruments by name (not a nested form of the whole
    config); submitted, the run completes and writes the dark asked for."""
    from playwright.sync_api import expect

    _open_custom_run(page, console, deployment)
    labels = [
        text.removesuffix(" (Optional)").strip()
        for text in page.locator("span.schema-form-property__label").all_inner_texts()
    ]
    order = [labels.index(name) for name in ("Image type", "Exposure time (s)", "Count")]
    assert order == sorted(order), labels
    assert len(labels) < 30, f"a long nested form: {labels}"
    assert not {"controllers", "storage"} & {label.lower() for label in labels}, labels
    instrument = _form_field(page, "instrument")
    expect(instrument.locator("button.p-select-button__control")).to_have_text("sim")
    _choose(page, instrument, "sim")  # a list of names to choose from

    runs_before = _operator_runs(api, deployment["id"])
    files_before = fits_files(console.data)
    _choose(page, _form_field(page, "Image type"), "dark")
    _form_field(page, "Exposure time (s)").locator("input").fill("1")
    began = time.monotonic()
    answer = _submit(page)
    assert answer.status == 201, answer.text()
    created = answer.json()  # read now: the body is gone once the page navigates
    run_id, run_name = created["id"], created["name"]
    # The UI goes back to the deployment's page. The run's page is opened by its
    # address: the toast's "View run" never takes a click (Prefect mounts two toast
    # containers, one covering the other), and the deployment's run list refreshes on
    # its own schedule, so clicking the new run's name there timed out once in CI.
    page.wait_for_url(re.compile(rf"/deployments/deployment/{deployment['id']}(\?.*)?$"))
    page.goto(f"{console.ui_url}/runs/flow-run/{run_id}")
    expect(page.get_by_text(run_name).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    assert _operator_runs(api, deployment["id"]) == runs_before | {run_id}

    run = _wait_completed(api, console, run_id)
    print(f"\nUI submit -> Completed {time.monotonic() - began:.1f} s")
    assert run["parameters"]["instrument"] == "sim"
    assert run["parameters"]["spec"]["image_type"] == "dark"
    _check_headers(_written_by(api, console, run_id, files_before), "dark", 1.0)
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)


@needs_chromium
def test_the_form_refuses_a_negative_exposure_time(
    page: Page, api: Api, console: Console, deployment: dict[str, Any]
) -> None:
    """The operator is told what is wrong, and nothing runs."""
    from playwright.sync_api import expect

    _open_custom_run(page, console, deployment)
    runs_before = _operator_runs(api, deployment["id"])
    files_before = fits_files(console.data)
    _choose(page, _form_field(page, "Image type"), "dark")
    _form_field(page, "Exposure time (s)").locator("input").fill("-5")
    answer = _submit(page)
    assert answer.status in (409, 422), answer.text()
    # Prefect's form leaves the check to the server and shows its answer in a toast.
    refusal = page.get_by_text(re.compile(r"exptime.*-5|greater than or equal to 0"))
    expect(refusal.locator("visible=true").first).to_be_visible()
    assert re.search(rf"/deployment/{deployment['id']}/run\b", page.url), page.url
    assert _operator_runs(api, deployment["id"]) == runs_before
    assert fits_files(console.data) == files_before


@needs_chromium
def test_the_run_page_shows_the_artifacts(
    page: Page, console: Console, dark_run: FinishedRun
) -> None:
    """What the flow publishes (tasks/reporting/artifacts.py) is where the operator looks: the
    run's Artifacts tab shows the progress, the exposure table and the summary."""
    from playwright.sync_api import expect

    page.goto(f"{console.ui_url}/runs/flow-run/{dark_run.run['id']}")
    # The run page's tabs are <li class="p-tab"> without a tab role.
    page.locator("li.p-tab").filter(has_text=re.compile(r"^\s*Artifacts\s*$")).click()
    for key in ("progress-take-dark", "exposures-take-dark", "summary-take-dark"):
        expect(page.get_by_role("link", name=re.compile(key))).to_be_visible()
    # The progress note: the count, then how long after its readout the files were on disk.
    note = re.compile(r"^exposure 1 of 1; exposure \d+ on disk \d+\.\d s after its readout$")
    expect(page.get_by_text(note)).to_be_visible()

    page.get_by_role("link", name=re.compile("summary-take-dark")).click()
    expect(page.get_by_role("heading", name="take-dark")).to_be_visible()
    expect(page.get_by_text(re.compile(r"^1 exposures, 2 files"))).to_be_visible()
    expect(page.get_by_role("cell", name="dark", exact=True)).to_be_visible()

    page.go_back()
    page.locator("li.p-tab").filter(has_text=re.compile(r"^\s*Artifacts\s*$")).click()
    page.get_by_role("link", name=re.compile("exposures-take-dark")).click()
    table = page.get_by_role("table")
    expect(table.get_by_role("columnheader", name="files", exact=True)).to_be_visible()
    # Text cells render as markdown articles, so they have no accessible name: match rows.
    rows = table.get_by_role("row").filter(has_text=dark_run.files[0].name)
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("dark")
    for path in dark_run.files:
        expect(rows).to_contain_text(path.name)


# -- the stop (keep last) -------------------------------------------------------------


def test_sigterm_stops_everything_the_console_started(console: Console) -> None:
    """Ctrl-C or a supervisor's SIGTERM ends the console within its budget, exit code 0,
    leaving no worker, flow run, server, reaper or PostgreSQL process and no api.json
    (which would send the next command to a dead server)."""
    pid = console.process.pid
    assert console.process.poll() is None, console.server_logs()
    # Known by pid before the stop: an exiting process's command line reads empty.
    watchers = {p for p in owned_processes(pid) if f"flows.reaper {pid}" in describe([p])}
    began = time.monotonic()
    console.process.send_signal(signal.SIGTERM)
    try:
        code = console.process.wait(timeout=CLEAN_STOP_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {CLEAN_STOP_S:.0f} s after SIGTERM\n{console.server_logs()}")
    took = time.monotonic() - began
    print(f"\nccdflow server stopped {took:.1f} s after SIGTERM")
    assert code == 0, console.server_logs()
    assert not console.api_file.exists()
    # The reaper watcher (flows/reaper.py) outlives its owner briefly, by design; every
    # other child must already be gone: a clean stop needs no reaping.
    left = [p for p in owned_processes(pid) if p not in watchers]
    assert not left, describe(left)
    assert not postgres_processes(console.root)
    deadline = time.monotonic() + 10
    while (left := owned_processes(pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, describe(left)
