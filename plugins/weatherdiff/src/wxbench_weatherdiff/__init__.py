"""wxbench WeatherDiff family: image-style latent and generative weather models."""
