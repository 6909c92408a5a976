"""The contracts every stage agrees on: the curated TFDV schemas (*.pbtxt) and, in
features.py, the names they and the exported SavedModel's signatures use.

This is the bottom layer: it imports nothing of the project, so components/, data/ and
serving/ can all read it without serving depending on the code that trains the model.
"""
