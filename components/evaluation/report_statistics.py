"""The report's data sections: StatisticsGen's rows per split and a few feature
distributions, and ExampleValidator's anomalies per split."""
from __future__ import annotations

from typing import Dict, Optional

from matplotlib.figure import Figure
from ml_metadata.proto import metadata_store_pb2
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

from hyperrec.components.evaluation.report_html import (
    COLORS, escape, html_table, not_run, png_img, read_bytes, split_files)

# Distributions shown: categorical features with few values, numeric ones; the rest is
# summarised in the statistics table.
MAX_CATEGORIES = 30
MAX_DISTRIBUTIONS = 6


def _feature_name(feature: statistics_pb2.FeatureNameStatistics) -> str:
    return ".".join(feature.path.step) or feature.name


def _distribution_plot(name: str, per_split: Dict[str, statistics_pb2.FeatureNameStatistics]
                       ) -> Optional[str]:
    figure = Figure(figsize=(4.6, 2.8))
    axes = figure.subplots()
    first = next(iter(per_split.values()))
    if first.HasField("string_stats"):
        labels = [v.value for v in first.string_stats.top_values][:MAX_CATEGORIES]
        width = 0.8 / len(per_split)
        for number, (split, feature) in enumerate(per_split.items()):
            counts = {v.value: v.frequency for v in feature.string_stats.top_values}
            # Shares of all values, not only of the top ones TFDV keeps.
            total = feature.string_stats.common_stats.tot_num_values or sum(counts.values()) or 1
            axes.bar([i + number * width for i in range(len(labels))],
                     [counts.get(label, 0.0) / total for label in labels], width, label=split,
                     color=COLORS[number % len(COLORS)])
        axes.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))])
        axes.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        axes.set_ylabel("share of values")
    else:
        for number, (split, feature) in enumerate(per_split.items()):
            standard = [h for h in feature.num_stats.histograms
                        if h.type == statistics_pb2.Histogram.STANDARD]
            if not standard or not standard[0].buckets:
                return None
            buckets = standard[0].buckets
            total = sum(b.sample_count for b in buckets) or 1.0
            axes.stairs([b.sample_count / total for b in buckets],
                        [buckets[0].low_value] + [b.high_value for b in buckets], label=split,
                        color=COLORS[number % len(COLORS)], linewidth=1.5)
        axes.set_ylabel("share of examples")
    axes.set_title(name, fontsize=10)
    axes.legend(fontsize=7)
    return png_img(figure, f"distribution of {name}")


def statistics_section(artifact: Optional[metadata_store_pb2.Artifact]) -> str:
    title = "Data statistics (TFDV, StatisticsGen)"
    if artifact is None:
        return not_run(title, "no ExampleStatistics artifact in this run")
    datasets: Dict[str, statistics_pb2.DatasetFeatureStatistics] = {}
    for split, path in split_files(artifact.uri, "FeatureStats.pb").items():
        stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(read_bytes(path))
        if stats.datasets:
            datasets[split] = stats.datasets[0]
    if not datasets:
        return not_run(title, f"no FeatureStats.pb under {artifact.uri}")
    parts = [f"<section><h2>{escape(title)}</h2><p class='src'>{escape(artifact.uri)}</p>",
             html_table(["split", "rows", "features"],
                    [(s, f"{int(d.num_examples):,}", len(d.features))
                     for s, d in datasets.items()])]
    features: Dict[str, Dict[str, statistics_pb2.FeatureNameStatistics]] = {}
    for split, dataset in datasets.items():
        for feature in dataset.features:
            features.setdefault(_feature_name(feature), {})[split] = feature
    rows = []
    for name, per_split in sorted(features.items()):
        cells = [name]
        for split in datasets:
            feature = per_split.get(split)
            if feature is None:
                cells.append("-")
            elif feature.HasField("string_stats"):
                common = feature.string_stats.common_stats
                cells.append(f"{feature.string_stats.unique:,} unique, "
                             f"{int(common.num_missing):,} missing")
            else:
                num = feature.num_stats
                cells.append(f"mean {num.mean:.4g}, min {num.min:.4g}, max {num.max:.4g}, "
                             f"{int(num.common_stats.num_missing):,} missing")
        rows.append(cells)
    parts.append(html_table(["feature"] + list(datasets), rows, "small"))
    shown = []
    for name, per_split in sorted(features.items()):
        first = next(iter(per_split.values()))
        few_values = (first.HasField("string_stats")
                      and 0 < first.string_stats.unique <= MAX_CATEGORIES)
        numeric = first.HasField("num_stats") and first.num_stats.max > first.num_stats.min
        if (few_values or numeric) and len(shown) < MAX_DISTRIBUTIONS:
            plot = _distribution_plot(name, per_split)
            if plot:
                shown.append(plot)
    parts.append('<div class="plots">' + "".join(shown) + "</div></section>")
    return "".join(parts)


def anomalies_section(artifact: Optional[metadata_store_pb2.Artifact]) -> str:
    title = "Anomalies (TFDV, ExampleValidator against the curated schema)"
    if artifact is None:
        return not_run(title, "no ExampleAnomalies artifact in this run")
    rows = []
    splits = split_files(artifact.uri, "SchemaDiff.pb")
    for split, path in splits.items():
        anomalies = anomalies_pb2.Anomalies.FromString(read_bytes(path))
        for feature, info in sorted(anomalies.anomaly_info.items()):
            rows.append((split, feature, anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
                         info.short_description, info.description))
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            rows.append((split, "(dataset)",
                         anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
                         info.short_description, info.description))
    body = (html_table(["split", "feature", "severity", "anomaly", "description"], rows, "small")
            if rows else f"<p class='ok'>No anomalies in {', '.join(splits) or 'any split'}.</p>")
    return (f"<section><h2>{escape(title)}</h2><p class='src'>{escape(artifact.uri)}</p>{body}"
            "</section>")
