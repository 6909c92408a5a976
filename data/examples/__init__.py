"""Small example data sets in the shapes users bring (README.md, "Your own data").

`reviews/`: a product-review log written by `reviews.build` from the tiny sample data
(data/synthetic, seed 42): ratings.csv.gz (reviewer, product, stars 1-5, rated_at_ms,
platform), products.csv (sku, name, blurb, department, price_eur, launched), photos/<sku>.png|jpg and
mapping.yaml for `hyperrec import table`. Rebuild it with `python -m hyperrec.data.examples.reviews`.
"""
