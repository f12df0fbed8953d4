"""Networks: the backbone registry and the EfficientDet detector."""
