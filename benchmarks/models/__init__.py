"""Models: the frame classifier (encoder + consensus head) and its training, the token ViT,
the CLIP4Clip-style text-video model, the segmentation net, the papers' architectures for
counting FLOPs. Each trains through :mod:`samplerbench.training`."""
