"""The data contract's code: one writer of the contract, the synthetic generator, importers."""
