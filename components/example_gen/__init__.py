"""The multimodal ExampleGen: joins interactions with the catalogue and its images.

`executor.Executor` plugs into TFX's FileBasedExampleGen (which resolves the latest span and
fingerprints its files); the transforms it is built from live in the sibling modules.
"""
