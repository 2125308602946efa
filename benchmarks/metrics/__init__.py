"""Metrics as pure functions of predictions and ground truth: classification (top-k, mean class
accuracy, mAP, event hit rate), ranking (text-video R@k, MdR, MnR), COCO mask/box AP."""
