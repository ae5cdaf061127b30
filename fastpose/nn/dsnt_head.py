import torch


class SoftmaxDSNT(torch.nn.Module):
    pass


class DSNTHead(torch.nn.Module):
    pass
