"""The InfluxDB 2 side of the historian (``vertac influx init``): the sink's bucket keeps raw
samples ``VERTAC_RAW_RETENTION_DAYS``, a second bucket keeps 1-minute aggregates
``VERTAC_ROLLUP_RETENTION_DAYS``, and a Flux task fills it every minute with what PostgreSQL's
``live_rollup_1m`` holds: min, max, mean, count, last and the bad-quality count per stream and
sensor. Safe to run again: buckets and the task are created or brought up to date."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.ingest.logic import MEASUREMENT

TASK_NAME = "vertac-rollup-1m"
ROLLUP_MEASUREMENT = "sensor_rollup_1m"
DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class InfluxPlan:
    org: str
    bucket: str  # the sink's, raw samples
    rollup_bucket: str
    raw_days: float
    rollup_days: float

    def describe(self) -> list[str]:
        return [
            f"bucket {self.bucket!r}: raw samples kept {self.raw_days:g} d",
            f"bucket {self.rollup_bucket!r}: 1 min aggregates kept {self.rollup_days:g} d",
            f"task {TASK_NAME!r}: every 1 min, {self.bucket!r} -> {self.rollup_bucket!r} "
            f"({ROLLUP_MEASUREMENT}: min, max, mean, count, last, bad_count)",
        ]


def _flux_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def flux_task(plan: InfluxPlan) -> str:
    """The downsampling task: each run aggregates the two whole minutes before it (a late
    sample is folded in by the next run; a rewrite of the same minute replaces its points)."""
    src, dst, org = (_flux_string(x) for x in (plan.bucket, plan.rollup_bucket, plan.org))
    return f"""import "date"

option task = {{name: {_flux_string(TASK_NAME)}, every: 1m, offset: 15s}}

stop = date.truncate(t: now(), unit: 1m)
start = date.sub(d: 2m, from: stop)
readings = from(bucket: {src})
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == {_flux_string(MEASUREMENT)})
    |> drop(fn: (column) => column == "cycle_id" or column == "dataset_id")
    |> group(columns: ["_measurement", "_field", "stream_id", "sensor_name"])
values = readings |> filter(fn: (r) => r._field == "value")

rollup = (tables=<-, name) => tables
    |> set(key: "_field", value: name)
    |> set(key: "_measurement", value: {_flux_string(ROLLUP_MEASUREMENT)})
    |> to(bucket: {dst}, org: {org})

values |> aggregateWindow(every: 1m, fn: min, createEmpty: false) |> rollup(name: "min")
values |> aggregateWindow(every: 1m, fn: max, createEmpty: false) |> rollup(name: "max")
values |> aggregateWindow(every: 1m, fn: mean, createEmpty: false) |> rollup(name: "mean")
values |> aggregateWindow(every: 1m, fn: last, createEmpty: false) |> rollup(name: "last")
values
    |> aggregateWindow(every: 1m, fn: count, createEmpty: false)
    |> toFloat()
    |> rollup(name: "count")
readings
    |> filter(fn: (r) => r._field == "quality")
    |> map(fn: (r) => ({{r with _value: if r._value == 192 then 0.0 else 1.0}}))
    |> aggregateWindow(every: 1m, fn: sum, createEmpty: false)
    |> rollup(name: "bad_count")
"""


def apply(plan: InfluxPlan, url: str, token: str) -> list[str]:
    """Create or update both buckets and the task on the InfluxDB 2 at ``url``; returns what
    was done, a line each. Raises :class:`InfluxSetupError` with the server's reason."""
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.domain import (
        bucket_retention_rules,
        task_create_request,
        task_update_request,
    )

    # the generated models are untyped
    rules_of: Any = bucket_retention_rules.BucketRetentionRules
    create_of: Any = task_create_request.TaskCreateRequest
    update_of: Any = task_update_request.TaskUpdateRequest
    from influxdb_client.rest import ApiException
    from urllib3.exceptions import HTTPError

    done: list[str] = []
    with InfluxDBClient(url=url, token=token or "none", org=plan.org, timeout=30_000) as client:
        try:
            orgs = client.organizations_api().find_organizations(org=plan.org)
            if not orgs:
                raise InfluxSetupError(f"organization {plan.org!r} does not exist")
            org_id = orgs[0].id
            buckets = client.buckets_api()
            for name, days in (
                (plan.bucket, plan.raw_days),
                (plan.rollup_bucket, plan.rollup_days),
            ):
                seconds = round(days * DAY_S)
                rules = [rules_of(type="expire", every_seconds=seconds)]
                found: Any = buckets.find_bucket_by_name(name)
                if found is None:
                    buckets.create_bucket(bucket_name=name, retention_rules=rules, org=org_id)
                    done.append(f"created bucket {name!r}, kept {days:g} d")
                elif [r.every_seconds for r in found.retention_rules or []] != [seconds]:
                    found.retention_rules = rules
                    buckets.update_bucket(found)
                    done.append(f"bucket {name!r}: retention set to {days:g} d")
                else:
                    done.append(f"bucket {name!r}: already kept {days:g} d")
            tasks = client.tasks_api()
            flux = flux_task(plan)
            existing = [t for t in tasks.find_tasks(name=TASK_NAME) if t.org_id == org_id]
            if not existing:
                tasks.create_task(task_create_request=create_of(
                    flux=flux, org_id=org_id, status="active",
                    description="VerTac: 1 min aggregates of sensor_readings",
                ))  # fmt: skip
                done.append(f"created task {TASK_NAME!r}")
            elif existing[0].flux != flux or existing[0].status != "active":
                tasks.update_task_request(existing[0].id, update_of(flux=flux, status="active"))
                done.append(f"task {TASK_NAME!r}: brought up to date")
            else:
                done.append(f"task {TASK_NAME!r}: already up to date")
        except ApiException as exc:
            raise InfluxSetupError(
                f"InfluxDB answered {exc.status} {exc.reason}: {exc.body}"
            ) from exc
        except (OSError, HTTPError) as exc:
            raise InfluxSetupError(f"InfluxDB at {url} is unreachable: {exc}") from exc
    return done


class InfluxSetupError(RuntimeError):
    """What stopped ``vertac influx init``, in the server's words."""
