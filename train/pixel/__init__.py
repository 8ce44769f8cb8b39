"""The pixel-space families of the paper's table: ae, memae, daad, daad+ (one U-Net, trained by
gradient descent on good images, scored by reconstruction error)."""
