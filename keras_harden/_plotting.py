"""The package's plots (diagnosis reports, interpolation paths, the demo):
matplotlib without a display, files written atomically."""

from keras_harden.saving import write_atomically

__all__ = ["pyplot", "save_figure"]


def pyplot(caller):
    """`matplotlib.pyplot` on the display-less Agg backend; an `ImportError`
    naming `caller` when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            f"{caller} needs matplotlib: pip install matplotlib"
        ) from error
    return plt


def save_figure(figure, path, dpi=100):
    """Writes `figure` to `path` atomically (format from the extension, PNG
    without one) and closes it. Returns `path` as a string."""
    import matplotlib.pyplot as plt

    try:
        return write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=dpi))
    finally:
        plt.close(figure)
