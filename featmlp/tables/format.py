"""A feature table on disk, by name: the entries of a feature file and the files of a sharded table.

Imports nothing of featmlp's, so the output guard (:mod:`featmlp._outputs`) recognises a table
without loading the code that reads one.
"""

# The arrays of a feature file (.npz), besides ``meta`` and a fitted state's ``fitted.*``.
REQUIRED_KEYS = ("X_train", "y_train", "X_test", "y_test", "feature_names", "class_names")

# A sharded table (a directory, featmlp.tables.sharded): its manifest names this format.
FORMAT = "featmlp-sharded-features"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FITTED_FILE = "fitted.npz"

# The spec of an extraction's resumable work directory (featmlp.tables.extract).
SPEC_FILE = "spec.json"
