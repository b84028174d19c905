"""medkit: medical imaging and clinical-AI toolkit.

Importing ``medkit`` is cheap on purpose: it pulls in neither torch-heavy
components nor ``transformers``. Import the subpackage you need::

    from medkit.io import load_volume, save_volume
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
