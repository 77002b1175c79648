"""slimgate's variant factory: teacher -> distilled and quantized variants, evaluated and registered.

Public surface: :func:`load_variant` (what the gateway uses), :class:`Registry`, :func:`load_recipe`.
"""

from variants.predictor import Predictions, Predictor, load_variant
from variants.recipe import Recipe, RecipeError, load_recipe
from variants.registry import (
    ChecksumMismatch,
    GateRejected,
    Manifest,
    Registry,
    RegistryError,
    VariantNotFound,
)

__all__ = [
    "ChecksumMismatch",
    "GateRejected",
    "Manifest",
    "Predictions",
    "Predictor",
    "Recipe",
    "RecipeError",
    "Registry",
    "RegistryError",
    "VariantNotFound",
    "load_recipe",
    "load_variant",
]
