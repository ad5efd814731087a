"""Backbones behind one surface: building any torchvision or timm classifier or a shipped preset
(`backbones`), swapping its head (`heads`), its stages in forward order (`stages`), and loading
weight files safely (`weights`), the ImageNet weights shipped for EfficientNet-Lite0/1/2 (`lite`)."""
