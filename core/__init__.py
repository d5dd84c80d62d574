"""Vista's algorithms: plain torch + einops + kornia. Never imports ComfyUI."""
