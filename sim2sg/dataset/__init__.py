"""sim2sg.dataset"""
