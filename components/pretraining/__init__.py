"""Pretrained item-tower encoders: pretraining (`hyperrec pretrain`), the saved format, and
loading into the Trainer's model.

Transfer learning for the two content encoders of the item tower (towers.ItemTower), one
module per job:

- image.py         the project's own `ImageEncoder` plus a softmax head, trained to classify
                   photos in a folder of class subfolders (`pretrain_image`);
- text.py          the project's own `TextEncoder` trained by masked-token prediction on
                   product texts tokenised with Transform's own `tokenize` (`pretrain_text`);
- training.py      what both share: Keras' own steps, a progress line per epoch;
- saved_format.py  the directory both write (manifest.json, weights, vocab.txt), the
                   architectures and the named errors;
- loading.py       a saved directory or a Keras model (local, gs://, http(s)) into the
                   model's encoders (`load_pretrained_encoders`, called by the Trainer's
                   build_model), the text table copied by token string.

The names below are the package's interface (the CLI, the Trainer, benches and tests).
"""
from hyperrec.components.pretraining.image import load_photo, pretrain_image, split_photos
from hyperrec.components.pretraining.loading import (LoadedEncoders, decode_vocabulary,
                                                     is_keras_model, load_image_encoder,
                                                     load_pretrained_encoders,
                                                     load_text_encoder, resolve,
                                                     token_row_map)
from hyperrec.components.pretraining.saved_format import (
    FORMAT, IMAGE, MANIFEST, TEXT, VOCABULARY, ArchitectureMismatch, InvalidPretrainedEncoder,
    PhotoFolderError, PretrainedEncoderDownloadError, PretrainedEncoderError,
    PretrainedEncoderNotFound, build_encoder, new_image_encoder, new_text_encoder,
    read_manifest, read_vocabulary, restore_encoder)
from hyperrec.components.pretraining.text import (build_vocabulary, encode_tokens,
                                                  mask_tokens, pretrain_text, tokenize_texts)

__all__ = [
    "FORMAT", "IMAGE", "MANIFEST", "TEXT", "VOCABULARY", "ArchitectureMismatch",
    "InvalidPretrainedEncoder", "LoadedEncoders", "PhotoFolderError",
    "PretrainedEncoderDownloadError", "PretrainedEncoderError", "PretrainedEncoderNotFound",
    "build_encoder", "build_vocabulary", "decode_vocabulary", "encode_tokens",
    "is_keras_model", "load_image_encoder", "load_photo", "load_pretrained_encoders",
    "load_text_encoder", "mask_tokens", "new_image_encoder", "new_text_encoder",
    "pretrain_image", "pretrain_text", "read_manifest", "read_vocabulary", "resolve",
    "restore_encoder", "split_photos", "token_row_map", "tokenize_texts"]
