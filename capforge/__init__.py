"""capforge: scaffold, train and serve captcha recognisers, one workspace per site."""

__version__ = "0.1.0"
