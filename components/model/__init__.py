"""The two-tower recommender: encoders, towers, task layers and the Keras model tying them.

`two_tower.build_two_tower_model` is the one place a model is built from a config; the
Trainer (and, later, the Tuner) calls it.
"""
