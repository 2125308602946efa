"""Numerical kernels the samplers share: farthest point / K-center selection and EVFR's frame
variance indices (SSIM, optical flow, feature cosine). Pure tensor code, no model, no I/O."""
