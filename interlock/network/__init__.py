"""The network as components: ComponentNet, splitting a model (yours, Hugging Face), tied parameters."""
