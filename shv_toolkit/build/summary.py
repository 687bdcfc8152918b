"""The end-of-build summary: counts, drop reasons, stage times, failures (printed by shv-build)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from shv_toolkit.build.units import SourceResult
from shv_toolkit.inputs import InputLineError

#: stage timings in the order the summary lists them
STAGES = ("download", "analysis", "tracking", "audio", "vocals", "render", "total")


@dataclass
class BuildSummary:
    n_sources: int
    n_ok: int
    n_failed: int
    n_input_errors: int
    clips_total: int
    clips_kept: int
    drop_reasons: dict[str, int]
    hours_kept: float
    stage_seconds: dict[str, float]
    failures: list[tuple[str, str]]
    manifests: dict[str, str]
    wall_seconds: float
    engine: str = ""
    tasks: dict[str, int] = field(default_factory=dict)  # tasks run this time: analyse, render, retried, lost
    report: str = ""  # path of report.html (the dataset card), once written

    def exit_code(self) -> int:
        return 0 if (self.n_failed == 0 and self.n_input_errors == 0) else 1

    def render(self) -> str:
        lines = [
            "shv-build summary",
            f"  sources: {self.n_ok} ok, {self.n_failed} failed/empty, {self.n_input_errors} bad input lines",
            f"  clips:   {self.clips_kept} kept of {self.clips_total} candidates "
            f"({self.hours_kept * 3600:.1f} s = {self.hours_kept:.4f} h kept)",
        ]
        for reason, n in sorted(self.drop_reasons.items(), key=lambda x: -x[1]):
            lines.append(f"    dropped {n:4d}  {reason}")
        lines.append("  time per stage (s): " + ", ".join(
            f"{k} {v:.1f}" for k, v in self.stage_seconds.items()))
        if self.engine:
            lines.append(f"  engine: {self.engine}; tasks run: " + (", ".join(
                f"{k} {v}" for k, v in self.tasks.items()) or "none (all done before)"))
        lines.append(f"  wall time: {self.wall_seconds:.1f} s")
        for sid, err in self.failures:
            lines.append(f"  FAILED {sid}: {err}")
        for name, path in self.manifests.items():
            lines.append(f"  {name}: {path}")
        if self.report:
            lines.append(f"  report (open in a browser): {self.report}")
        return "\n".join(lines)


def summarise(results: list[SourceResult], bad_lines: list[InputLineError], manifests: dict[str, str],
              wall: float) -> BuildSummary:
    drops: Counter[str] = Counter()
    total = kept = 0
    kept_seconds = 0.0
    stage: Counter[str] = Counter()
    failures = []
    for r in results:
        for k, v in r.timings.items():
            stage[k] += v
        if r.source["status"] != "ok":
            failures.append((r.source["source_id"], f"{r.source['url']}: {r.source['error']}"))
        for c in r.clips:
            total += 1
            if c["keep"]:
                kept += 1
                kept_seconds += c["end_s"] - c["start_s"]
            else:
                drops[c["drop_reason"]] += 1
    for bl in bad_lines:
        failures.append((f"line {bl.line_no}", f"{bl.text[:80]}: {bl.reason}"))
    n_ok = sum(1 for r in results if r.source["status"] == "ok")
    return BuildSummary(
        n_sources=len(results), n_ok=n_ok, n_failed=len(results) - n_ok, n_input_errors=len(bad_lines),
        clips_total=total, clips_kept=kept, drop_reasons=dict(drops), hours_kept=kept_seconds / 3600,
        stage_seconds={k: round(stage[k], 2) for k in STAGES if k in stage}, failures=failures,
        manifests=manifests, wall_seconds=wall,
    )
