"""Features of candidate pools shared by every learned piece of a run: the train and val
splits' candidates decoded once, the frozen classifier's features and frame logits on them."""
