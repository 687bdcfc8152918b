"""Hallo backbone of SINGER: reference UNet (2D), denoising UNet (3D), FaceLocator, ImageProj, AudioProj."""
