"""The synthetic world: vocabulary, planning, language, rendering and manifests."""
