"""Names shared by the config translation and the running gateway (no imports, no Ray)."""

GATEWAY_MODEL = "slimgate"  # the routed model of the inference protocol, and the router application
ROUTER_APP = GATEWAY_MODEL
ROUTER_DEPLOYMENT = "Router"
VARIANT_APP_PREFIX = "variant-"  # the application of a variant with a deployment of its own
VARIANT_DEPLOYMENT = "Variant"
