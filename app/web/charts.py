"""Charts drawn on the server as inline SVG: no JavaScript, nothing fetched."""

from typing import Any

from app.web.dates import month_label

SERIES = (("given", "Consent given"), ("withdrawn", "Consent withdrawn"), ("opt_outs", "Opt-outs"))


def month_chart(
    months: list[str], totals: dict[str, dict[str, int]], *, width: int = 760, height: int = 220
) -> dict[str, Any]:
    """Grouped bars per month, one per series; geometry only, the template draws it."""
    top, bottom, left = 10, 30, 36
    plot_h = height - top - bottom
    peak = max([1] + [totals[m][key] for m in months for key, _ in SERIES])
    group_w = (width - left) / max(len(months), 1)
    bar_w = group_w / (len(SERIES) + 1)
    bars, labels = [], []
    for i, month in enumerate(months):
        x0 = left + i * group_w + bar_w / 2
        for j, (key, name) in enumerate(SERIES):
            value = totals[month][key]
            h = plot_h * value / peak
            bars.append(
                {
                    "x": round(x0 + j * bar_w, 1),
                    "y": round(top + plot_h - h, 1),
                    "w": round(bar_w - 1, 1),
                    "h": round(h, 1),
                    "series": key,
                    "title": f"{month_label(month, short=False)}: {name} {value}",
                }
            )
        labels.append({"x": round(x0 + bar_w * len(SERIES) / 2, 1), "text": month_label(month)})
    return {
        "width": width,
        "height": height,
        "baseline": top + plot_h,
        "left": left,
        "peak": peak,
        "peak_y": top,
        "bars": bars,
        "labels": labels,
        "series": SERIES,
    }
