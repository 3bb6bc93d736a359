"""The computations behind the teaching panels: pure functions over text, events, logits or a model,
each returning a dataclass that a figure or view draws. Nothing here imports gradio, and nothing
here runs inside the training loop: panels are computed on request or by observers."""
