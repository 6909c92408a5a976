"""`python -m hyperrec.serving [FLAGS]`: the model server, with tensorflow_model_server's flags."""
from hyperrec.serving.cli import serve

if __name__ == "__main__":
    serve()
