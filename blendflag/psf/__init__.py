"""PSF models and their checks, PSFEx resampling, the stellar locus, the WCS Jacobian,
and the SExtractor + PSFEx chain."""
