"""Importers: real data sets -> the data contract (data/README.md), like the generator's output.

- `online_retail`: the UCI Online Retail invoice lines -> purchase events and a catalogue.
- `image_folder`: class folders of product photos -> a catalogue with images (and, on request,
  a documented synthetic interaction log so that it can run through the pipeline).

Both write `span-{k}/interactions.csv`, `span-{k}/items.csv`, `images/` when there are images,
and `import_report.json` (what was read, cleaned, merged and dropped, and why) via
`contract`. `cli.import_data` is the `hyperrec import` command group.
"""
