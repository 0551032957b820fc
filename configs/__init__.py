"""The built-in demo configs (`mlcycle train --config adult`): package data, read with importlib.resources."""
