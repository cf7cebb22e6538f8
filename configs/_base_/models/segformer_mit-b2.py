# SegFormer with the MiT-B2 encoder: mmseg's MiT-B0 model with B2's depths and
# widths, exactly as mmseg's segformer_mit-b2_* configs set them.
_base_ = ['mmseg::_base_/models/segformer_mit-b0.py']

model = dict(
    backbone=dict(embed_dims=64, num_heads=[1, 2, 5, 8], num_layers=[3, 4, 6, 3]),
    decode_head=dict(in_channels=[64, 128, 320, 512]))
