import sys
from pathlib import Path

import torch

# The reference helpers live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)  # tiny tensors: threads cost more than they give, and results stay deterministic
