# Official recipe: mmseg's segformer_mit-b0_8xb2-160k_ade20k-512x512 (37.41 mIoU in
# the model zoo) as an epoch-based run: the B2 baseline with the MiT-B0 encoder.
_base_ = ['./segformer_mit-b2_8xb2-127e_ade20k-512x512.py']

checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b0_20220624-7e0fe6dd.pth'  # noqa
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint), embed_dims=32,
                  num_heads=[1, 2, 5, 8], num_layers=[2, 2, 2, 2]),
    decode_head=dict(in_channels=[32, 64, 160, 256]))
