mod phones_baresip;
mod phones_linphone;
