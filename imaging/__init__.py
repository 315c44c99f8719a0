"""Turning image files into pixels: the one decoder that training and the service share.

TensorFlow-free on purpose: the service's decoding threads and the training reader import it,
and neither should pay for, nor depend on, anything but Pillow and NumPy here.
"""
